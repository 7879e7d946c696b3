"""The records a run summary needs, found at C speed; the rest are only counted.

`iter_records` yields every record of a log. Scoring a raw log does not need most of them: every
rank prints every event (copies that differ only in `time_ms`), and many keys are read by no
compliance rule and not by the summary. This scanner finds all records of a block with one
`re.findall`, recognises a rank's copy of a recent record by a dict lookup on its bytes, and
decodes each distinct record once. Records whose key the caller marks as not needed, and copies of
keys whose copies cannot change anything, are only counted (`counted`, the number of official
records skipped so far, is current whenever a record is yielded).

Everything else is what `iter_records` yields (same records, same `official`/`copy` flags, same
problems with the same file and line), except that `Record.line` is 0: line numbers are worked
out only for problems, which is what keeps the common path free of per-line work.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import Any

from hpcrepro.results import mllog
from hpcrepro.results.mllog import (
    _STRIP,
    TOKEN,
    CrashingRecord,
    Problem,
    ProblemSink,
    Record,
    _decode_record,
    _fast_loads,
    has_big_integer,
)

# One MLLOG record per match, up to the end of its `\n` line (`.*` runs at memchr speed; a line
# holding `\r` or a second record is redone by `_messy_line`). The first branch splits off the
# integer time_ms digits (up to 16: float(int(digits)) then neither overflows nor costs much),
# the only bytes in which rank copies differ; anything else (odd field order, leading blanks,
# a longer number) takes the second branch and is never taken for a copy.
_RECORD = re.compile(
    rb':::MLLOG (?:(\{"namespace": "[^"\r\n]*", "time_ms": )(0|[1-9][0-9]{0,15})(,.*)|(.*))')
_SPLIT_TIME = re.compile(rb'(\{"namespace": "[^"\r\n]*", "time_ms": )(0|[1-9][0-9]{0,15})(,.*)',
                         re.DOTALL)
_PLAIN_HEAD = b'{"namespace": "", "time_ms": '
RECENT_LIMIT = 4096  # distinct payloads remembered; a rank's copy follows within a few lines
_COUNT, _DROP = True, False  # what `_settle` returns instead of a record to yield


class _LineFinder:
    """Offset and line number of the n-th match in a block, computed only when needed."""

    def __init__(self, buf: bytes, end: int, first_line: int) -> None:
        self.buf, self.end = buf, end
        self.starts: list[int] | None = None
        self.pos, self.line = 0, first_line

    def start(self, index: int) -> int:
        if self.starts is None:
            self.starts = [m.start() for m in _RECORD.finditer(self.buf, 0, self.end)]
        return self.starts[index]

    def line_of(self, index: int) -> int:
        pos = self.start(index)
        if pos >= self.pos:  # problems come in file order; count only the new stretch
            self.line += self.buf.count(b"\n", self.pos, pos)
        else:
            self.line -= self.buf.count(b"\n", pos, self.pos)
        self.pos = pos
        return self.line


def _feed_nowhere(time_ms: float, key: str, value: Any, metadata: Any, index: int) -> None:
    """Never called: without a feed_copy, no copy is stored for feeding."""


class SummaryScan:
    """Iterate over the records of `path` that a summary needs.

    `needed`: keys whose records are yielded (the others are only counted). `copies_needed`: keys
    whose rank copies are yielded too (copies of other keys are only counted), except keys in
    `copies_fed`, whose copies go to `feed_copy(time_ms, key, value, metadata, index)` instead.
    `official` is the number of official records so far, the current one included, so the index
    of a yielded official record among them is `official - 1`.
    """

    def __init__(self, path: str | Path, on_problem: ProblemSink, needed: Container[str],
                 copies_needed: Container[str], copies_fed: Container[str] = (),
                 feed_copy: Callable[[float, str, Any, Any, int], None] | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.report = on_problem
        self.needed = needed
        self.copies_needed = copies_needed
        self.copies_fed = copies_fed if feed_copy is not None else ()
        self.feed_copy = feed_copy or _feed_nowhere
        self.official = 0
        # copy key -> True (only count), a Record (yield), or (key, value, metadata) (feed_copy)
        self.seen: dict[bytes, Any] = {}

    def __iter__(self) -> Iterator[Record]:
        seen_get = self.seen.get
        settle = self._settle
        feed_copy = self.feed_copy
        findall = _RECORD.findall
        official = 0
        with mllog.open_log(self.path) as handle:
            blocks = mllog.BlockReader(handle, self.name, self.report)
            for buf, end in blocks:
                lines = _LineFinder(buf, end, blocks.line)
                for index, (head, digits, rest, other) in enumerate(findall(buf, 0, end)):
                    if head:
                        copy_key = rest if head == _PLAIN_HEAD else head + rest
                        known = seen_get(copy_key)
                        if known is not None:  # a copy of a clean, decoded record
                            official += 1
                            if known is True:
                                continue
                            if type(known) is tuple:
                                key, value, metadata = known
                                feed_copy(float(int(digits)), key, value, metadata, official - 1)
                                continue
                            self.official = official
                            yield Record(float(int(digits)), known.key,
                                         known.value, known.metadata,
                                         known.event_type, known.namespace,
                                         0, True, True)
                            continue
                        payload = head + digits + rest
                    else:
                        payload, copy_key = other, b""
                    if TOKEN in payload or b"\r" in payload:
                        self.official = official
                        yield from self._messy_line(buf, lines, index)
                        official = self.official
                        continue
                    result = settle(payload, copy_key, digits, lines, index)
                    if result is True:
                        official += 1
                    elif result is not False:
                        official += 1
                        self.official = official
                        yield result
                self.official = official

    def _settle(self, payload: bytes, copy_key: bytes, digits: bytes, lines: _LineFinder,
                index: int) -> Record | bool:
        """Decode an official payload that is no known copy: the record, `_COUNT` or `_DROP`."""
        try:  # the common case (ASCII, a complete record), as _decode_record takes it
            if not payload.isascii() or has_big_integer(payload):
                raise ValueError
            obj = _fast_loads(payload.strip(_STRIP))
            key = obj["key"]
            if type(key) is not str or "value" not in obj or "metadata" not in obj:
                raise ValueError
            time_ms = float(obj["time_ms"])
        except (ValueError, KeyError, TypeError, OverflowError):
            found = _decode_record(payload, 0, True)
            if isinstance(found, str):
                self.report(Problem(self.name, lines.line_of(index), found, True,
                                    isinstance(found, CrashingRecord)))
                return _DROP
            record: Record | None = found
            key, time_ms = found.key, found.time_ms
        else:
            record = None
            if key in self.needed or key in self.copies_needed:
                record = Record(time_ms, key, obj["value"], obj["metadata"],
                                obj.get("event_type", ""), obj.get("namespace", ""), 0, True)
        if record is None:  # nobody reads it: validated, now only counted
            if copy_key and float(int(digits)) == time_ms:
                if len(self.seen) >= RECENT_LIMIT:
                    self.seen.clear()
                self.seen[copy_key] = _COUNT
            return _COUNT
        if copy_key and float(int(digits)) == record.time_ms:
            if len(self.seen) >= RECENT_LIMIT:
                self.seen.clear()
            self.seen[copy_key] = (
                _COUNT if key not in self.copies_needed
                else (key, record.value, record.metadata) if key in self.copies_fed
                else record)
        return record if key in self.needed else _COUNT

    def _messy_line(self, buf: bytes, lines: _LineFinder, index: int) -> Iterator[Record]:
        """Every record of a `\n` line that holds `\r` or several records, the slow way: the
        official parser splits lines at `\r` too and keeps only the last record of each."""
        line = lines.line_of(index)
        pos = lines.start(index)
        stop = buf.find(b"\n", pos, lines.end)
        stop = lines.end if stop == -1 else stop
        while pos != -1:
            eol = buf.find(b"\r", pos, stop)
            eol = stop if eol == -1 else eol
            starts = [pos]
            nxt = buf.find(TOKEN, pos + 9, eol)
            while nxt != -1:
                starts.append(nxt)
                nxt = buf.find(TOKEN, nxt + 9, eol)
            if len(starts) > 1:
                self.report(Problem(self.name, line, f"{len(starts)} MLLOG records on one "
                                    "line; mlperf-logging keeps only the last", False))
                for here, following in itertools.pairwise(starts):
                    record = _decode_record(buf[here + 9 : following], line, False)
                    if isinstance(record, str):
                        self.report(Problem(self.name, line, record, False))
                    elif record.key in self.needed:
                        yield record
            payload = buf[starts[-1] + 9 : eol]
            split = _SPLIT_TIME.fullmatch(payload)
            copy_key = digits = b""
            if split:
                head, digits, rest = split.groups()
                copy_key = rest if head == _PLAIN_HEAD else head + rest
            known = self.seen.get(copy_key) if copy_key else None
            if known is None:
                result = self._settle(payload, copy_key, digits, lines, index)
                if result is not False:
                    self.official += 1
                    if result is not True:
                        yield result
            else:
                self.official += 1
                if type(known) is tuple:
                    self.feed_copy(float(int(digits)), known[0], known[1], known[2],
                                   self.official - 1)
                elif known is not True:
                    yield Record(float(int(digits)), known.key,
                                 known.value, known.metadata,
                                 known.event_type, known.namespace,
                                 0, True, True)
            pos = buf.find(TOKEN, eol, stop)
