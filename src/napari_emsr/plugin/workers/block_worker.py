"""The block task: compute the restored blocks that layers asked for, one at a time, newest request first.

A :class:`~napari_emsr.plugin.lazy_layer.RestoredPlanes` records which blocks the plane on screen needs; this
generator takes them from a :class:`BlockQueue`, yields a note before each block (what is being computed) and
the block when it is done, and returns when nothing is asked for any more. Quitting the worker (the activity
dock's cancel button) stops it between blocks and drops what was asked for; a block already started finishes
(the network cannot be interrupted part-way) and is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class BlockNote:
    """What the worker yields: a block it starts (``value`` None), one it finished (``value`` the array), or
    nothing (``planes`` None: it waits for the user to settle on a plane). ``partner``: the same block of a
    layer computed with the one just reported (the fused layer's uncertainty), already stored."""

    planes: Any
    block: tuple[int, ...]
    value: Any = None
    seconds: float = 0.0
    partner: bool = False


class BlockQueue:
    """The layers whose blocks are wanted (thread-safe): :meth:`next` picks the most recent request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layers: list = []

    def add(self, planes: Any) -> None:
        """Watch ``planes`` (a RestoredPlanes) for wanted blocks."""
        with self._lock:
            if planes not in self._layers:
                self._layers.append(planes)

    def discard(self, planes: Any) -> None:
        """Stop watching ``planes`` (its layer was removed)."""
        with self._lock:
            if planes in self._layers:
                self._layers.remove(planes)
                planes.forget_wanted()

    def pending(self) -> bool:
        """Whether any watched layer asks for a block."""
        with self._lock:
            return any(p.wanted for p in self._layers)

    def waiting(self) -> int:
        """How many blocks are asked for and not started."""
        with self._lock:
            return sum(len(p.wanted) for p in self._layers)

    def newest(self) -> float:
        """perf_counter time of the newest request still waiting (0 when none)."""
        with self._lock:
            return max((p.wanted_time for p in self._layers if p.wanted), default=0.0)

    def next(self) -> tuple[Any, tuple[int, ...]] | None:
        """(layer data, block) of the newest request, or None."""
        with self._lock:
            layers = sorted(self._layers, key=lambda p: p.wanted_at, reverse=True)
        for planes in layers:
            block = planes.next_wanted()
            if block is not None:
                return planes, block
        return None

    def clear(self) -> None:
        """Drop every request (cancel)."""
        with self._lock:
            layers = list(self._layers)
        for planes in layers:
            planes.forget_wanted()


#: Seconds a request must stay the newest before its block starts: a slider dragged across many planes starts
#: no block for the planes it only passes through (a started block cannot be interrupted).
SETTLE_SECONDS = 0.25


def block_task(queue: BlockQueue, settle: float = SETTLE_SECONDS) -> Iterator[BlockNote]:
    """Compute wanted blocks until none is left; yields a note before and after each block."""
    import time

    while True:
        while queue.pending() and time.perf_counter() - queue.newest() < settle:
            time.sleep(0.05)
            yield BlockNote(None, ())  # lets a quit() stop the worker while it waits
        job = queue.next()
        if job is None:
            return
        planes, block = job
        yield BlockNote(planes, block)
        t0 = time.perf_counter()
        (first, value), *partners = planes.compute_blocks(block)
        for partner, part in partners:
            # NOTE: kept here, before the next request is read: the partner may ask for this very block
            partner.store(block, part)
        yield BlockNote(first, block, value, time.perf_counter() - t0)
        for partner, part in partners:  # the same block of the layers computed with it (fused: its uncertainty)
            yield BlockNote(partner, block, part, 0.0, partner=True)
