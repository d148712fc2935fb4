"""The verdict word, and the output record of one file: defined here, once.

The verdict is stored as ``is_ai_generated``: ``True`` (AI-generated), ``False`` (a real
photograph) or ``None`` (uncertain). Its word is :class:`VerdictWord` (``"ai"``, ``"real"``,
``"uncertain"``: the API's ``verdict`` field, the batch counts); each output shows it in the
form it always has, derived from that one word:

==========================  =====================================  ==========================
form                        words                                  used by
==========================  =====================================  ==========================
``word`` (the value)        ai, real, uncertain                    API, batch counts
``word.upper()``            AI, REAL, UNCERTAIN                    scan/submit/eval lines
``word.text``               AI, real, uncertain                    ``skygate results`` table
``word.label``              AI, Real, Uncertain                    the HTML report
``word.phrase``             AI-generated, real photograph, …       the ensemble's summary
==========================  =====================================  ==========================

The file record (:class:`FileRecord`) is what ``scan`` and ``submit`` write, one JSON object
(and one CSV row) per input file; :func:`file_record` builds its base, before any stored
verdict is read into it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict


class VerdictWord(StrEnum):
    AI = "ai"
    REAL = "real"
    UNCERTAIN = "uncertain"

    @classmethod
    def of(cls, is_ai_generated: bool | None) -> VerdictWord:
        """The word for a stored ``is_ai_generated`` (``None``: uncertain)."""
        if is_ai_generated is None:
            return cls.UNCERTAIN
        return cls.AI if is_ai_generated else cls.REAL

    @property
    def text(self) -> str:
        """In running text: "AI" (an acronym), "real", "uncertain"."""
        return "AI" if self is VerdictWord.AI else self.value

    @property
    def label(self) -> str:
        """As a heading: "AI", "Real", "Uncertain"."""
        text = self.text
        return text[:1].upper() + text[1:]

    @property
    def phrase(self) -> str:
        """In a sentence: "AI-generated", "real photograph", "uncertain"."""
        return _PHRASES[self]


_PHRASES = {VerdictWord.AI: "AI-generated", VerdictWord.REAL: "real photograph",
            VerdictWord.UNCERTAIN: "uncertain"}


def verdict_word(is_ai_generated: bool | None) -> VerdictWord:
    """``"ai"``, ``"real"`` or ``"uncertain"`` (a ``str``) for a stored verdict."""
    return VerdictWord.of(is_ai_generated)


# --- the output record of one file -----------------------------------------------------------

RecordStatus = Literal["done", "duplicate", "queued", "pending", "failed", "skipped"]
"""``done``: judged by this run; ``duplicate``: the same content was judged before;
``queued``: sent and not followed (``submit --no-wait``); ``pending``: still running at the
timeout; ``failed``: detection or validation failed; ``skipped``: the file could not be read."""

JUDGED_STATUSES: tuple[str, ...] = ("done", "duplicate")
"""Statuses whose record carries a verdict."""

RECORD_FIELDS: list[str] = ["path", "sha256", "upload_id", "status", "is_ai_generated",
                            "confidence", "error"]
"""The record's flat fields, in the order of the CSV columns."""


class FileRecord(TypedDict):
    """One input file's outcome (a plain dict: written as JSON lines and CSV rows)."""

    path: str
    sha256: str | None
    upload_id: int | None
    status: str  # a RecordStatus
    is_ai_generated: bool | None
    confidence: float | None
    methods: dict[str, dict[str, Any]]  # per method: is_ai_generated, confidence, status, …
    error: str | None
    summary: NotRequired[str]  # the stored result's summary, when there is one
    ai_probability: NotRequired[float | None]  # the stored verdict's P(AI)
    explanation: NotRequired[dict]  # why (pipeline/explanation.py), when there is a result
    upload_date: NotRequired[Any]  # ``skygate results`` only: when it was uploaded


def file_record(*, path: str, status: str, sha256: str | None = None,
                upload_id: int | None = None, error: str | None = None) -> FileRecord:
    """A record with no verdict yet (``record_for`` adds the stored one)."""
    return {"path": path, "sha256": sha256, "upload_id": upload_id, "status": status,
            "is_ai_generated": None, "confidence": None, "methods": {}, "error": error}


def record_verdict(record: FileRecord) -> VerdictWord:
    """The verdict word of a record (meaningful when its status is judged)."""
    return VerdictWord.of(record["is_ai_generated"])
