"""A cheap structural check that finds corrupt and truncated images without decoding them.

Decoding 1.28 M JPEGs would cost more than the whole pack, so the check walks the JPEG marker
segments up to the first scan and then looks for the end-of-image marker (inside entropy-coded
data 0xFF is always followed by 0x00 or a restart marker, so a 0xFFD9 there is the real end). PNGs
must end with their IEND chunk. Other formats DALI decodes are accepted by signature. ImageNet
itself holds a PNG and CMYK JPEGs under `.JPEG` names; both pass, as through im2rec and DALI.
"""

from __future__ import annotations

_OTHER_SIGNATURES = (
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"\0\0\0\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
)
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def image_problem(data: bytes | bytearray, start: int = 0, end: int | None = None) -> str | None:
    """None for a plausible complete image in `data[start:end]`, else why it is corrupt.

    Offsets instead of a slice let the packer check images in place inside its read buffer.
    """
    end = len(data) if end is None else end
    size = end - start
    if size < 8:
        return f"only {size} bytes long" if size else "empty file"
    head = bytes(data[start : start + 12])
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_problem(data, start, end)
    if head[:8] == _PNG:
        tail = bytes(data[max(start, end - 4096) : end]).rstrip(b"\0")
        return None if tail.endswith(_PNG_END) else "truncated PNG (no IEND chunk)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return None
    if any(head.startswith(signature) for signature, _ in _OTHER_SIGNATURES):
        return None
    return f"not a JPEG or PNG (starts with {head[:4].hex()})"


def _jpeg_problem(data: bytes | bytearray, start: int, end: int) -> str | None:
    pos = start + 2
    seen_frame = False
    while pos < end:
        if data[pos] != 0xFF:
            return f"bad JPEG marker at byte {pos - start}"
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:
            return "JPEG ends before its image data"
        if pos + 2 > end:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > end:
            break
        if marker in _SOF:
            if length < 8 or data[pos + 5] == data[pos + 6] == 0:
                return "JPEG frame header with zero width"
            seen_frame = True
        if marker == 0xDA:
            if not seen_frame:
                return "JPEG scan without a frame header"
            # Searched from the end: a complete file is answered at once.
            if data.rfind(b"\xff\xd9", pos + length, end) < 0:
                return "truncated JPEG (no end-of-image marker)"
            return None
        pos += length
    return "truncated JPEG (ends inside its headers)"
