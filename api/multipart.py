"""Streaming multipart/form-data: each part named ``file`` goes straight into the blob
store's staging area while it is hashed, so a request never holds a file in memory
(Starlette's ``request.form()`` would spool it, and reading it back held it whole).

Text fields named ``client_reference`` are kept (at most REFERENCE_LENGTH characters each):
the n-th one belongs to the n-th file. Other text fields are skipped."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError
from schemas.text import clean_text
from storage.blobs import BlobStore, StagedBlob

FIELD_NAME = "file"
REFERENCE_FIELD = "client_reference"
REFERENCE_LENGTH = 255
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class FilePart:
    filename: str
    staged: StagedBlob | None
    size: int = 0
    too_large: bool = False
    client_reference: str | None = None


@dataclass
class _Current:
    headers: dict = field(default_factory=dict)
    name: str | None = None
    file: FilePart | None = None
    skip: bool = False
    field_bytes: int = 0
    text: bytearray | None = None


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return value.decode("latin-1")


MAX_PART_HEADERS = 16
MAX_HEADER_VALUE = 4096


class _Receiver:
    """The parser's callbacks: each ``file`` part goes into its own staged blob."""

    def __init__(self, blobs: BlobStore, charset: str, *, max_files: int, max_bytes: int,
                 max_fields: int):
        self.blobs, self.charset = blobs, charset
        self.max_files, self.max_bytes, self.max_fields = max_files, max_bytes, max_fields
        self.files: list[FilePart] = []
        self.references: list[str] = []
        self.file_count = self.field_count = 0
        self.refusal: ApiError | None = None
        self.cur = _Current()
        self.header_name = self.header_value = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def refuse(self, error: ApiError) -> None:
        if self.refusal is None:
            self.refusal = error

    def on_part_begin(self):
        self.cur = _Current()

    def on_header_field(self, data, start, end):
        self.header_name += data[start:end]

    def on_header_value(self, data, start, end):
        self.header_value += data[start:end]

    def on_header_end(self):
        if len(self.cur.headers) < MAX_PART_HEADERS:
            self.cur.headers[self.header_name.lower()] = self.header_value[:MAX_HEADER_VALUE]
        self.header_name = self.header_value = b""

    def on_headers_finished(self):
        cur = self.cur
        _, options = parse_options_header(cur.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            self.refuse(ApiError(400, "malformed_multipart", "cannot parse the multipart "
                                 "body: a part has no name in its Content-Disposition"))
            cur.skip = True
            return
        cur.name = _decode(options[b"name"], self.charset)
        if b"filename" in options:
            self.file_count += 1
            if self.file_count > self.max_files:
                self.refuse(ApiError(400, "too_many_files",
                                     f"at most {self.max_files} files per request"))
            if cur.name != FIELD_NAME or self.refusal is not None:
                cur.skip = True
                return
            cur.file = FilePart(_decode(options[b"filename"], self.charset), self.blobs.stage())
            self.files.append(cur.file)
        else:
            self.field_count += 1
            if self.field_count > self.max_fields:
                self.refuse(ApiError(400, "malformed_multipart",
                                     f"more than {self.max_fields} form fields"))
            if cur.name == REFERENCE_FIELD:
                cur.text = bytearray()
            else:
                cur.skip = True

    def on_part_data(self, data, start, end):
        if self.cur.text is not None:
            if len(self.cur.text) + end - start > REFERENCE_LENGTH * 4:
                self.refuse(ApiError(400, "invalid_client_reference", "a client_reference "
                                     f"has at most {REFERENCE_LENGTH} characters"))
            else:
                self.cur.text += data[start:end]
            return
        part = self.cur.file
        if part is None or self.cur.skip:
            return
        part.size += end - start
        if part.staged is None:
            return
        if part.size > self.max_bytes or self.refusal is not None:
            part.too_large = part.size > self.max_bytes
            part.staged.discard()
            part.staged = None
            return
        part.staged.write(memoryview(data)[start:end])

    def on_part_end(self):
        if self.cur.text is not None:
            self.references.append(_decode(bytes(self.cur.text), self.charset))
        if self.cur.file is not None and self.cur.file.staged is not None:
            self.cur.file.staged.finish()

    def attach_references(self) -> None:
        """The n-th client_reference to the n-th file."""
        if len(self.references) > len(self.files):
            self.refuse(ApiError(400, "invalid_client_reference",
                                 f"{len(self.references)} client_reference fields for "
                                 f"{len(self.files)} files: at most one per file, in order"))
            return
        for part, reference in zip(self.files, self.references, strict=False):
            text = clean_text(reference, limit=REFERENCE_LENGTH + 1).strip()
            if len(text) > REFERENCE_LENGTH:
                self.refuse(ApiError(400, "invalid_client_reference", "a client_reference "
                                     f"has at most {REFERENCE_LENGTH} characters"))
            part.client_reference = text or None


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
    receiver = _Receiver(blobs, charset, max_files=max_files, max_bytes=max_bytes,
                         max_fields=max_fields)
    try:
        parser = MultipartParser(boundary, receiver.callbacks())
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
        receiver.attach_references()
        if receiver.refusal is not None:
            raise receiver.refusal
        return receiver.files
    except FormParserError as exc:
        discard(receiver.files)
        raise ApiError(400, "malformed_multipart",
                       f"cannot parse the multipart body: {exc}") from None
    except BaseException:
        discard(receiver.files)
        raise


def discard(files: list[FilePart]) -> None:
    for part in files:
        if part.staged is not None:
            part.staged.discard()
