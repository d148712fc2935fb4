"""Reading the boxes of ISO-BMFF (HEIF/AVIF) files that Pillow's plugins do not expose:
the ``ftyp`` brands, the coded bit depth (``pixi``) and where the image data ends (``iloc``).
Pure byte parsing, no decoding; :mod:`pipeline.decode` uses it to sniff and check the files.
"""

from __future__ import annotations

_FTYP_BRANDS_AT = 12  # size, "ftyp", major brand: compatible brands start after the version
_FTYP_COMPATIBLE_AT = 16
_PIXI_MIN_BODY = 6  # version/flags, channel count, one depth
_COLOUR_CHANNELS = 3
_ILOC_MAX_VERSION = 2  # version 2 widens item ids and counts to 4 bytes


def ftyp_brands(data: bytes) -> list[bytes] | None:
    """Major brand then compatible brands of a leading ``ftyp`` box, or None if there is none."""
    if len(data) < _FTYP_BRANDS_AT or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    end = (min(size, len(data), 4096) if size >= _FTYP_COMPATIBLE_AT else _FTYP_BRANDS_AT)
    compatible = [data[i:i + 4] for i in range(16, end - 3, 4)]
    return [data[8:12], *compatible]


def _boxes(data: bytes, start: int, end: int):
    """``(type, body_start, body_end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, kind: bytes, span: tuple[int, int] | None, *, full: bool = False):
    """The body span of the first ``kind`` box in ``span`` (after a FullBox header if full)."""
    if not span:
        return None
    for k, s, e in _boxes(data, *span):
        if k == kind:
            return (s + 4 if full else s), e
    return None


def _meta(data: bytes):
    return _child(data, b"meta", (0, len(data)), full=True)


def bit_depth(data: bytes) -> int | None:
    """Bits per channel from the first colour ``pixi`` property (meta/iprp/ipco), if any."""
    ipco = _child(data, b"ipco", _child(data, b"iprp", _meta(data)))
    if not ipco:
        return None
    depths = []
    for kind, s, e in _boxes(data, *ipco):
        if kind == b"pixi" and e - s >= _PIXI_MIN_BODY:
            channels = data[s + 4]
            bits = list(data[s + 5:min(e, s + 5 + channels)])
            if bits:
                depths.append((channels >= _COLOUR_CHANNELS, max(bits)))
    colour = [b for is_colour, b in depths if is_colour]
    return (colour or [b for _, b in depths] or [None])[0]


def data_end(data: bytes) -> int | None:
    """Where the last item extent (``iloc``, file offsets) ends, or None if unreadable.

    libheif fills the missing tiles of a truncated grid image with a flat colour instead of
    failing, so a truncated HEIC has to be caught here.
    """
    iloc = _child(data, b"iloc", _meta(data))
    if not iloc:
        return None
    pos, end = iloc  # starts at the FullBox version byte

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > end:
            raise ValueError("iloc overruns its box")
        value = int.from_bytes(data[pos:pos + n], "big")
        pos += n
        return value

    try:
        version = read(1)
        read(3)
        if version > _ILOC_MAX_VERSION:
            return None
        wide = 4 if version == _ILOC_MAX_VERSION else 2
        sizes = read(1)
        offset_size, length_size = sizes >> 4, sizes & 15
        sizes = read(1)
        base_size, index_size = sizes >> 4, (sizes & 15 if version else 0)
        last = 0
        for _ in range(read(wide)):
            read(wide)  # item_ID
            method = read(2) & 15 if version else 0
            data_ref = read(2)
            base = read(base_size)
            for _ in range(read(2)):
                read(index_size)
                offset, length = read(offset_size), read(length_size)
                if method == 0 and data_ref == 0 and length:
                    last = max(last, base + offset + length)
        return last
    except ValueError:
        return None
