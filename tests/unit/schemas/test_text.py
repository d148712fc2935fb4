"""Text cleaning before PostgreSQL or MongoDB sees it."""

from __future__ import annotations

from schemas.text import clean_json, clean_text


def test_control_characters_and_lone_surrogates_are_dropped():
    # A lone surrogate comes from JSON ("\ud800"); no database encoding takes it, so an audit
    # row naming such a user (or a feedback note) would fail to insert.
    assert clean_text("a\x00b\ud800c\udfffd\te\n", limit=None) == "abcd\te\n"
    assert clean_json({"us\ud83der": ["x\x07\udc00y", 1.5]}) == {"user": ["xy", 1.5]}
    assert clean_text("😀 ok") == "😀 ok"  # a real astral character is a pair-free code point
