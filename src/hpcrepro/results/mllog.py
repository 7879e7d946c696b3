"""Streaming reader for `:::MLLOG` records in raw training logs.

Real logs carry rank prefixes (`0: `, `[1,0]<stdout>:`), noise, `\\r` progress bars, several
records on one physical line, truncated JSON, latin-1 bytes and files of gigabytes. This reader
scans fixed-size blocks with C-level `bytes.find`, so noise costs almost nothing, never holds a
whole file in memory, and reports every problem with its file and line instead of raising.

It also marks, for each record, whether mlperf-logging's own parser would see it: that parser
splits lines like Python's text mode (`\\n`, `\\r`, `\\r\\n`), keeps only the last `:::MLLOG ` of a
line and decodes it with `json.loads` after `str.strip()`. Scoring uses that view so scores agree.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from hpcrepro.safeopen import open_regular

_fast_loads: Callable[[bytes], Any]
try:  # orjson is several times faster; json stays the reference for anything it rejects
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installation
    _fast_loads = json.loads

TOKEN = b":::MLLOG "
BLOCK_SIZE = 8 << 20
# A line longer than this holds no usable record (real records are < 1 kB): it is not kept in
# memory, so a log padded with NUL bytes after a crash cannot exhaust it.
MAX_LINE = 16 << 20
# str.strip() whitespace within latin-1/ASCII that bytes.strip() would miss.
_STRIP = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_DECODER = json.JSONDecoder()
# orjson turns an integer beyond 64 bits into a float where json.loads keeps an int, so payloads
# with a run of 20 digits are left to json (translate + find: a tenth of a regex search's cost).
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_TWENTY_DIGITS = b"0" * 20


def has_big_integer(payload: bytes) -> bool:
    return _TWENTY_DIGITS in payload.translate(_DIGITS_AS_ZERO)


class Record(NamedTuple):
    """One MLLOG event. `official` is False for a record mlperf-logging would not see."""

    time_ms: float
    key: str
    value: Any
    metadata: Any
    event_type: str
    namespace: str
    line: int
    official: bool
    copy: bool = False  # same bytes as a recent record except time_ms: another rank's copy


@dataclass(frozen=True)
class Problem:
    """Something wrong in a log, located by file and line."""

    path: str
    line: int
    message: str
    official_parse_error: bool  # mlperf-logging's parser would also reject (or crash on) it
    official_crash: bool = False  # ... and it would crash on it rather than report it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


ProblemSink = Callable[[Problem], None]


def open_log(path: str | Path) -> BinaryIO:
    """Open a log, refusing anything but a regular file (see `safeopen`): a `result_0.txt`
    that is a FIFO would block forever and a link to /dev/zero would never end."""
    return open_regular(path)


class CrashingRecord(str):
    """Why a record is unusable, when mlperf-logging's parser would crash on it: that parser
    catches only ValueError, so a payload that is no object, lacks a field, nests too deeply for
    `json.loads` or has a time_ms `float()` refuses with another error stops the whole check."""


def _decode(payload: bytes) -> Any:
    """Decode like mlperf-logging (latin-1 text, str.strip, json.loads), fast when ASCII."""
    if payload.isascii() and not has_big_integer(payload):
        stripped = payload.strip(_STRIP)
        try:
            return _fast_loads(stripped)
        except ValueError:
            return json.loads(stripped.decode("ascii"))
    return json.loads(payload.decode("latin-1").strip())


def _decode_prefix(payload: bytes) -> Any:
    """Decode the JSON object at the start of `payload`; what follows is another rank's text."""
    text = payload.decode("latin-1").lstrip()
    return _DECODER.raw_decode(text)[0]


def _to_record(obj: Any, line: int, official: bool) -> Record | str:
    """Build a Record or return why the object is not a valid MLLOG record."""
    if not isinstance(obj, dict):
        return CrashingRecord(f"MLLOG payload is a JSON {type(obj).__name__}, not an object")
    missing = [k for k in ("time_ms", "key", "value", "metadata") if k not in obj]
    if missing:
        return CrashingRecord(f"MLLOG record lacks {', '.join(repr(k) for k in missing)}")
    try:
        time_ms = float(obj["time_ms"])
    except ValueError:
        return f"MLLOG record has a non-numeric time_ms {_clip_value(obj['time_ms'])}"
    except (TypeError, OverflowError):
        return CrashingRecord(f"MLLOG record has a time_ms that is no number "
                              f"{_clip_value(obj['time_ms'])}")
    key = obj["key"]
    if not isinstance(key, str):
        return f"MLLOG record has a non-string key {key!r}"
    return Record(
        time_ms, key, obj["value"], obj["metadata"], str(obj.get("event_type", "")),
        str(obj.get("namespace", "")), line, official,
    )


class BlockReader:
    """Read a log in blocks that end at a line break (`\\n` or `\\r`), never holding a whole line
    longer than `MAX_LINE` in memory.

    Iterating yields `(buffer, end)`: `buffer[:end]` is whole lines (the last block: the rest of
    the file), and `line` is the line number of `buffer[0]`. A line longer than
    `MAX_LINE` keeps only its tail from its last `:::MLLOG ` on; if that record alone is longer,
    it is reported and skipped up to the next line break.
    """

    def __init__(self, handle: BinaryIO, name: str, report: ProblemSink) -> None:
        self.handle, self.name, self.report = handle, name, report
        self.line = 1

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        read = self.handle.read
        carry = b""
        skipping = False  # inside a record longer than MAX_LINE: drop bytes up to a line break
        final = False
        while not final:
            block = read(BLOCK_SIZE)
            final = not block
            if 0 < len(block) < BLOCK_SIZE:  # most logs fit one block: then no cut, carry
                more = read(BLOCK_SIZE)  # or newline count is needed
                final = not more
                block += more
            if skipping:
                found = [at for at in (block.find(b"\n"), block.find(b"\r")) if at != -1]
                if not found:
                    continue
                block, skipping = block[min(found) :], False
            buf = carry + block if carry else block
            end = len(buf)
            if not final:
                cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
                if cut == -1:  # no line break yet: keep reading, up to MAX_LINE
                    carry, skipping = self._long_line(buf)
                    continue
                end = cut + 1
            yield buf, end
            if not final:
                self.line += buf.count(b"\n", 0, end)
                carry = buf[end:]

    def _long_line(self, buf: bytes) -> tuple[bytes, bool]:
        """What to keep of a line without a break so far: (carry, skip the rest of the line)."""
        if len(buf) <= MAX_LINE:
            return buf, False
        last = buf.rfind(TOKEN)
        if last == -1:
            return buf[-(len(TOKEN) - 1) :], False  # a token may straddle the next block
        if len(buf) - last <= MAX_LINE:
            return buf[last:], False
        self.report(Problem(self.name, self.line, f"MLLOG record longer than {MAX_LINE >> 20} "
                            "MiB (no line break): skipped", True))
        return b"", True


def iter_records(
    path: str | Path, on_problem: ProblemSink | None = None, *, start: int = 0
) -> Iterator[Record]:
    """Yield every MLLOG record of a file in order; report problems to `on_problem`.

    `start` is a byte offset to begin at (used to read only the tail of a growing log); line
    numbers are then counted from that offset.
    """
    name = str(path)
    report: ProblemSink = on_problem or (lambda _p: None)
    copies = _RecentRecords()
    with open_log(path) as handle:
        if start:
            handle.seek(start)
        blocks = BlockReader(handle, name, report)
        for buf, end in blocks:
            find, count = buf.find, buf.count
            line_no, counted = blocks.line, 0
            pos = find(TOKEN, 0, end)
            while pos != -1:
                line_no += count(b"\n", counted, pos)
                counted = pos
                eol = find(b"\n", pos, end)
                if eol == -1:
                    eol = end
                cr = find(b"\r", pos, eol)
                if cr != -1:
                    eol = cr
                nxt = find(TOKEN, pos + 9, eol)
                if nxt != -1:
                    starts = [pos]
                    while nxt != -1:
                        starts.append(nxt)
                        nxt = find(TOKEN, nxt + 9, eol)
                    report(Problem(name, line_no, f"{len(starts)} MLLOG records on one line; "
                                   "mlperf-logging keeps only the last", False))
                    for here, following in itertools.pairwise(starts):
                        hidden = _parse(buf[here + 9 : following], name, line_no, report, False)
                        if hidden is not None:
                            yield hidden
                    pos = starts[-1]
                payload = buf[pos + 9 : eol]
                record = copies.lookup(payload, line_no)
                if record is None:
                    record = _parse(payload, name, line_no, report, True)
                    if record is not None:
                        copies.remember(payload, record)
                if record is not None:
                    yield record
                pos = find(TOKEN, eol, end)


class _RecentRecords:
    """Recognise another rank's copy of a recent record without decoding it again.

    Every rank logs the same event a few ms apart, so raw logs repeat each payload with only the
    time_ms digits changed. A payload whose bytes outside those digits equal a recent decoded
    record's is that record at another time (the digits are checked to be a plain integer, so the
    JSON is as valid as the original); it is returned with `copy=True`.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self.seen: dict[bytes, Record] = {}

    @staticmethod
    def _split(payload: bytes) -> tuple[bytes, bytes] | None:
        at = payload.find(b'"time_ms": ', 0, 64)
        if at == -1:
            return None
        comma = payload.find(b",", at + 11, at + 40)
        if comma == -1:
            return None
        return payload[:at] + payload[comma:], payload[at + 11 : comma]

    def lookup(self, payload: bytes, line: int) -> Record | None:
        parts = self._split(payload)
        if parts is None:
            return None
        known = self.seen.get(parts[0])
        if known is None or not parts[1].isdigit():
            return None
        return Record(float(int(parts[1])), known.key, known.value, known.metadata,
                      known.event_type, known.namespace, line, True, True)

    def remember(self, payload: bytes, record: Record) -> None:
        parts = self._split(payload)
        if parts is None or not parts[1].isdigit() or float(int(parts[1])) != record.time_ms:
            return
        if len(self.seen) >= self.LIMIT:
            self.seen.clear()
        self.seen[parts[0]] = record


def _parse(payload: bytes, name: str, line: int, report: ProblemSink, official: bool
           ) -> Record | None:
    """Decode one payload; an `official=False` payload may have another rank's text after it."""
    record = _decode_record(payload, line, official)
    if isinstance(record, str):
        crash = official and isinstance(record, CrashingRecord)
        report(Problem(name, line, record, official, crash))
        return None
    return record


def _decode_record(payload: bytes, line: int, official: bool) -> Record | str:
    """The Record in `payload`, or the problem message saying why there is none."""
    try:
        obj = _decode(payload) if official else _decode_prefix(payload)
    except ValueError as error:
        detail = str(error).split("; use sys.set_int_max_str_digits")[0]  # advice for coders
        return f"invalid MLLOG JSON ({detail}): {_clip(payload)}"
    except RecursionError:
        return CrashingRecord(f"MLLOG JSON nested too deeply to decode: {_clip(payload)}")
    try:  # the common case, without per-field checks
        key = obj["key"]
        if type(key) is str:
            return Record(float(obj["time_ms"]), key, obj["value"], obj["metadata"],
                          obj.get("event_type", ""), obj.get("namespace", ""), line, official)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        pass
    reason = _to_record(obj, line, official)
    if isinstance(reason, str):
        return type(reason)(f"{reason}: {_clip(payload)}")
    return reason


def _clip(payload: bytes, width: int = 80) -> str:
    """The start of a payload for a message, control bytes shown as escapes: a log's ESC
    sequences must not reach the user's terminal."""
    text = _shorten(payload.decode("latin-1").strip(), width)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _clip_value(value: Any, width: int = 40) -> str:
    """repr() of a decoded JSON value, cut short (a 5000-digit number would flood the report)."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr() may refuse or be huge
        return f"(an integer of about {int((value.bit_length() - 1) * 0.30103) + 1} digits)"
    return _shorten(repr(value), width)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
