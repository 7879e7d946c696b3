"""Logs that mlperf-logging's compliance checker cannot finish, found before it runs.

Its parser strips rank prefixes with `re.sub(".*:::MLLOG ", ...)` on every line that holds the
token; after the last token of a line that regex is retried at every position and scans to the
line's end each time, so its time grows with the square of what follows the token: 256 KiB take
a minute, the 2 MiB of NUL bytes a crashed node leaves after a cut record take hours. Real
records are under 300 bytes (the longest in NVIDIA's published logs is 264), so a line whose
record is longer than `MAX_RECORD` is reported instead of being handed to the checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcrepro.results.mllog import TOKEN, open_log

MAX_RECORD = 64 << 10  # about 4 s of the checker's regex on a slow core; 250 x a real record
_BLOCK = 8 << 20


@dataclass(frozen=True)
class LongRecord:
    """A line of a log whose text after its last `:::MLLOG ` is too long to check."""

    line: int
    length: int  # bytes after the token
    nul_bytes: bool  # NUL bytes in it: the usual crash artefact

    def describe(self) -> str:
        size = (
            f"{self.length / 2**20:.1f} MiB"
            if self.length >= 1 << 20
            else f"{self.length >> 10} KiB"
        )
        cause = ", NUL bytes after a cut record as a crash leaves them" if self.nul_bytes else ""
        return f"line {self.line} holds {size} after ':::MLLOG '{cause}"


def _break_at(buf: bytes, start: int) -> int:
    """The first line break at or after `start` (`\\n`, or `\\r` as Python's text mode also
    splits there, so mlperf-logging does), or -1; each byte is looked at once."""
    newline = buf.find(b"\n", start)
    cr = buf.find(b"\r", start, len(buf) if newline == -1 else newline)
    return newline if cr == -1 else cr


def long_record(
    path: str | Path, limit: int = MAX_RECORD, block_size: int = _BLOCK
) -> LongRecord | None:
    """The first line whose text after its last token is longer than `limit` bytes, or None.

    One pass of `bytes.find` over the file, from token to token. Of a line that goes on into
    the next block only its last record's line, length and NUL flag are kept, with the line's
    last bytes (a token may start there), so memory stays within a block however long the line.
    """
    line = 1  # the line that buf starts in
    # the last record of the line being read: where it starts (its line number is counted
    # only when needed, which keeps the scan linear), its length, NUL bytes seen in it
    record: int | None = None
    record_line: int | None = None
    length, nul = 0, False
    carry = b""
    with open_log(path) as handle:
        while True:
            data = handle.read(block_size)
            buf = carry + data
            pos = 0
            while pos != -1:
                eol = _break_at(buf, pos)
                stop = len(buf) if eol == -1 else eol
                last = buf.rfind(TOKEN, pos, stop)
                if last != -1:
                    rest = buf[last + len(TOKEN) : stop]
                    record, record_line, length, nul = last, None, len(rest), b"\0" in rest
                elif record_line is not None:  # the last block's line goes on, still no token
                    new = buf[len(carry) : stop]
                    length += len(new)
                    nul = nul or b"\0" in new
                if eol == -1 and data:
                    break  # the line goes on in the next block
                if record is not None and length > limit:
                    if record_line is None:
                        record_line = line + buf.count(b"\n", 0, record)
                    return LongRecord(record_line, length, nul)
                record = record_line = None
                if eol == -1:
                    return None  # the end of the file
                pos = buf.find(TOKEN, eol)
                if pos != -1:  # from the start of the line that holds the next token
                    pos = max(buf.rfind(b"\n", eol, pos), buf.rfind(b"\r", eol, pos)) + 1
            if record is not None and record_line is None:
                record_line = line + buf.count(b"\n", 0, record)
            start = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1  # of the unfinished line
            keep = max(start, len(buf) - len(TOKEN) + 1)
            line += buf.count(b"\n", 0, keep)
            carry = buf[keep:]
