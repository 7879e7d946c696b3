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


def image_problem(data: bytes) -> str | None:
    """None for a plausible complete image, else a short reason why it is corrupt."""
    if len(data) < 8:
        return f"only {len(data)} bytes long" if data else "empty file"
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_problem(data)
    if data[:8] == _PNG:
        return None if data.rstrip(b"\0").endswith(_PNG_END) else "truncated PNG (no IEND chunk)"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return None
    if any(data.startswith(signature) for signature, _ in _OTHER_SIGNATURES):
        return None
    return f"not a JPEG or PNG (starts with {data[:4].hex()})"


def _jpeg_problem(data: bytes) -> str | None:
    size = len(data)
    pos = 2
    seen_frame = False
    while pos < size:
        if data[pos] != 0xFF:
            return f"bad JPEG marker at byte {pos}"
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:
            return "JPEG ends before its image data"
        if pos + 2 > size:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > size:
            break
        if marker in _SOF:
            if length < 8 or data[pos + 5 : pos + 7] == b"\0\0":
                return "JPEG frame header with zero width"
            seen_frame = True
        if marker == 0xDA:
            if not seen_frame:
                return "JPEG scan without a frame header"
            if data.find(b"\xff\xd9", pos + length) < 0:
                return "truncated JPEG (no end-of-image marker)"
            return None
        pos += length
    return "truncated JPEG (ends inside its headers)"
