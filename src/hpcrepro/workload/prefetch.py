"""Batches assembled on the device ahead of the training step, in one or more lanes.

A lane is a thread with its own assembler (an `EncodedBatch` -> images and labels on the device)
and its own CUDA stream; each batch is handed over with an event that the consumer's stream waits
for, so assembly overlaps the step. A dealer thread reads the loader and gives batch i to lane
i % lanes; the consumer takes batch i back from that lane, so batches arrive in the loader's
order however fast each lane is, and an exception (a bad record, say) is raised in the consumer
at the batch it belongs to.

More than one lane pays where assembling a batch is mostly waiting: a DALI pipeline decodes,
resizes and synchronises one batch at a time, and beside a training step that fills the GPU
each of those waits grows, so one pipeline that keeps up alone falls behind in a run
(benchmarks/RESULTS.md, issue 16). Two pipelines keep two batches in flight.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Sequence

import torch

from hpcrepro.workload.data import EncodedBatch

Assembler = Callable[[EncodedBatch], tuple[torch.Tensor, torch.Tensor]]
_DONE = object()  # the end of the batches, or a lane told to stop


def _put(box: queue.Queue, stop: threading.Event, item: object) -> bool:
    """Put `item` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            box.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _take(box: queue.Queue, stop: threading.Event) -> object:
    while not stop.is_set():
        try:
            return box.get(timeout=0.1)
        except queue.Empty:
            continue
    return _DONE


class Prefetcher:
    """Runs the assemblers over `batches`, one lane each, up to about `depth` batches ahead."""

    def __init__(
        self,
        batches: Iterable[EncodedBatch],
        assemblers: Assembler | Sequence[Assembler],
        device: torch.device,
        depth: int = 3,
    ) -> None:
        self.batches = batches
        self.assemblers = [assemblers] if callable(assemblers) else list(assemblers)
        if not self.assemblers:
            raise ValueError("a Prefetcher needs at least one assembler")
        self.device, self.depth = device, depth

    def __iter__(self) -> Generator[tuple[torch.Tensor, torch.Tensor]]:
        lanes = len(self.assemblers)
        stop = threading.Event()
        inboxes: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(lanes)]
        ready_per_lane = max(1, -(-self.depth // lanes))
        outboxes: list[queue.Queue] = [queue.Queue(maxsize=ready_per_lane) for _ in range(lanes)]
        threads = [threading.Thread(target=self._deal, args=(inboxes, stop), daemon=True)]
        threads += [
            threading.Thread(target=self._lane, args=(assemble, inbox, outbox, stop), daemon=True)
            for assemble, inbox, outbox in zip(self.assemblers, inboxes, outboxes, strict=True)
        ]
        for thread in threads:
            thread.start()
        try:
            for turn in itertools.count():
                item = outboxes[turn % lanes].get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                images, labels, ready = item
                if ready is not None:
                    consumer = torch.cuda.current_stream(self.device)
                    consumer.wait_event(ready)
                    images.record_stream(consumer)
                    labels.record_stream(consumer)
                yield images, labels
        finally:
            stop.set()
            while any(thread.is_alive() for thread in threads):
                for box in (*inboxes, *outboxes):  # unblock threads waiting on a full queue
                    with contextlib.suppress(queue.Empty):
                        box.get_nowait()
                for thread in threads:
                    thread.join(timeout=0.01)

    def _deal(self, inboxes: list[queue.Queue], stop: threading.Event) -> None:
        """Batch i to lane i % lanes; then the end (or the loader's error) to the lane whose turn
        it is, and `_DONE` to the others."""
        lanes, turn = len(inboxes), 0
        ending: object = _DONE
        try:
            for batch in self.batches:
                if not _put(inboxes[turn % lanes], stop, batch):
                    return
                turn += 1
        except BaseException as exc:  # the consumer raises it when it reaches this turn
            ending = exc
        for offset in range(lanes):
            if not _put(inboxes[(turn + offset) % lanes], stop, ending if offset == 0 else _DONE):
                return

    def _lane(
        self, assemble: Assembler, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event
    ) -> None:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        while True:
            batch = _take(inbox, stop)
            if batch is _DONE or isinstance(batch, BaseException):
                _put(outbox, stop, batch)
                return
            try:
                item = self._assemble(assemble, batch, stream)  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the consumer, which raises it
                _put(outbox, stop, exc)
                return
            if not _put(outbox, stop, item):
                return

    @staticmethod
    def _assemble(
        assemble: Assembler, batch: EncodedBatch, stream: torch.cuda.Stream | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        if stream is None:
            return (*assemble(batch), None)
        # nvJPEG writes from a stream of its own into memory this stream freed: let the lane's
        # last batch finish before the next decode reuses it.
        stream.synchronize()
        with torch.cuda.stream(stream):
            images, labels = assemble(batch)
            ready = torch.cuda.Event()
            ready.record(stream)
        return images, labels, ready
