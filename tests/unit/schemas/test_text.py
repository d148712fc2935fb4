"""Text cleaning before PostgreSQL or MongoDB sees it."""

from __future__ import annotations

from schemas.text import clean_json, clean_text


def test_control_characters_and_lone_surrogates_are_dropped():
    # A lone surrogate comes from JSON ("\ud800"); no database encoding takes it, so an audit
    # row naming such a user (or a feedback note) would fail to insert.
    assert clean_text("a\x00b\ud800c\udfffd\te\n", limit=None) == "abcd\te\n"
    assert clean_json({"us\ud83der": ["x\x07\udc00y", 1.5]}) == {"user": ["xy", 1.5]}
    assert clean_text("😀 ok") == "😀 ok"  # a real astral character is a pair-free code point


def test_a_stored_reason_names_no_server_path_and_no_errno_tag():
    import errno
    import os

    from schemas.text import public_reason, without_paths

    erofs = OSError(errno.EROFS, os.strerror(errno.EROFS), "/tmp/x/blobs/02")
    assert public_reason(erofs) == "OSError: Read-only file system"
    assert public_reason(RuntimeError("kaboom")) == "RuntimeError: kaboom"
    assert public_reason(ValueError("")) == "ValueError"
    said = "aggregate failed: OSError: [Errno 28] No space left on device: '/var/lib/b/x.png'"
    assert without_paths(said) == ("aggregate failed: OSError: No space left on device: "
                                   "'<path>'")
    assert without_paths(r"cannot open C:\data\blobs\x.png") == "cannot open <path>"
    # Not paths: MIME types, ratios, words with slashes.
    kept = "image/jpeg, 3/4 of and/or 10/20/30"
    assert without_paths(kept) == kept
