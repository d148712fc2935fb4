"""Streaming multipart/form-data: each part named ``file`` goes straight into the blob
store's staging area while it is hashed, so a request never holds a file in memory
(Starlette's ``request.form()`` would spool it, and reading it back held it whole)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError
from storage.blobs import BlobStore, StagedBlob

FIELD_NAME = "file"
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class FilePart:
    filename: str
    staged: StagedBlob | None
    size: int = 0
    too_large: bool = False


@dataclass
class _Current:
    headers: dict = field(default_factory=dict)
    name: str | None = None
    file: FilePart | None = None
    skip: bool = False
    field_bytes: int = 0


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return value.decode("latin-1")


async def receive_files(request, blobs: BlobStore, *, max_files: int, max_bytes: int,
                        max_fields: int = 50) -> list[FilePart]:
    """Parse the body as it streams; return the ``file`` parts, each staged in ``blobs``
    (``staged`` is None for a part over ``max_bytes``: its bytes were counted, not kept).

    The whole body is read even after a refusal is certain, so the client gets the answer
    instead of a reset connection; the body size limit and timeouts bound that. Raises
    ApiError (400) for a malformed body or too many files; discards every staged file on
    any error.
    """
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_multipart", "cannot parse the multipart body: "
                                                   "no boundary in the Content-Type header")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    files: list[FilePart] = []
    counts = {"files": 0, "fields": 0}
    refusal: list[ApiError] = []
    cur = _Current()
    header = {"name": b"", "value": b""}

    def refuse(error: ApiError) -> None:
        if not refusal:
            refusal.append(error)

    def on_part_begin():
        nonlocal cur
        cur = _Current()

    def on_header_field(data, start, end):
        header["name"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        if len(cur.headers) < 16:
            cur.headers[header["name"].lower()] = header["value"][:4096]
        header["name"], header["value"] = b"", b""

    def on_headers_finished():
        _, options = parse_options_header(cur.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            refuse(ApiError(400, "malformed_multipart", "cannot parse the multipart body: a "
                            "part has no name in its Content-Disposition"))
            cur.skip = True
            return
        cur.name = _decode(options[b"name"], charset)
        if b"filename" in options:
            counts["files"] += 1
            if counts["files"] > max_files:
                refuse(ApiError(400, "too_many_files",
                                f"at most {max_files} files per request"))
            if cur.name != FIELD_NAME or refusal:
                cur.skip = True
                return
            cur.file = FilePart(_decode(options[b"filename"], charset), blobs.stage())
            files.append(cur.file)
        else:
            counts["fields"] += 1
            if counts["fields"] > max_fields:
                refuse(ApiError(400, "malformed_multipart",
                                f"more than {max_fields} form fields"))
            cur.skip = True

    def on_part_data(data, start, end):
        part = cur.file
        if part is None or cur.skip:
            return
        part.size += end - start
        if part.staged is None:
            return
        if part.size > max_bytes or refusal:
            part.too_large = part.size > max_bytes
            part.staged.discard()
            part.staged = None
            return
        part.staged.write(memoryview(data)[start:end])

    def on_part_end():
        if cur.file is not None and cur.file.staged is not None:
            cur.file.staged.finish()

    callbacks = dict(on_part_begin=on_part_begin, on_part_data=on_part_data,
                     on_part_end=on_part_end, on_header_field=on_header_field,
                     on_header_value=on_header_value, on_header_end=on_header_end,
                     on_headers_finished=on_headers_finished)
    try:
        parser = MultipartParser(boundary, callbacks)
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if refusal:
            raise refusal[0]
        return files
    except FormParserError as exc:
        discard(files)
        raise ApiError(400, "malformed_multipart",
                       f"cannot parse the multipart body: {exc}") from None
    except BaseException:
        discard(files)
        raise


def discard(files: list[FilePart]) -> None:
    for part in files:
        if part.staged is not None:
            part.staged.discard()
