"""schemas/records.py: the verdict word in every display form, and the file record."""

from __future__ import annotations

import json

import pytest

from schemas.records import (
    RECORD_FIELDS,
    FileRecord,
    VerdictWord,
    file_record,
    record_verdict,
    verdict_word,
)


@pytest.mark.parametrize(("stored", "word", "upper", "text", "label", "phrase"), [
    (True, "ai", "AI", "AI", "AI", "AI-generated"),
    (False, "real", "REAL", "real", "Real", "real photograph"),
    (None, "uncertain", "UNCERTAIN", "uncertain", "Uncertain", "uncertain"),
])
def test_each_display_form_derives_from_the_one_word(stored, word, upper, text, label, phrase):
    w = verdict_word(stored)
    assert w == word and w.value == word and str(w) == word and f"{w}" == word
    assert json.dumps({"verdict": w}) == json.dumps({"verdict": word})
    assert (w.upper(), w.text, w.label, w.phrase) == (upper, text, label, phrase)
    assert VerdictWord(word) is w


def test_file_record_has_every_flat_field_and_no_verdict_yet():
    record: FileRecord = file_record(path="a.jpg", status="skipped", error="cannot read")
    assert list(record) == [*RECORD_FIELDS[:-1], "methods", "error"]
    assert set(RECORD_FIELDS) <= set(record)
    assert record["is_ai_generated"] is None and record["confidence"] is None
    assert record["methods"] == {} and record["upload_id"] is None
    assert record_verdict(record) is VerdictWord.UNCERTAIN
