"""Blocks of a bounded-memory write: which axis to walk along and which ranges to compute at once.

Both writers (TIFF and OME-Zarr) compute a lazy volume block by block; the blocks follow the dask chunks so
that every chunk of computed data (e.g. a reconstruction) is computed exactly once.
"""

from __future__ import annotations

import dask.array as da
import numpy as np


def block_axis(arr: da.Array) -> int:
    """Axis to write along: z, unless the data has a single chunk along z and several along another axis.

    Computed data (e.g. a reconstruction made of xz planes) may be chunked with whole z columns; cutting
    it into z-blocks would compute every chunk once per block, so blocks follow its chunks instead.
    """
    counts = [len(c) for c in arr.chunks]
    if counts[0] > 1 or max(counts) == 1:
        return 0
    return int(np.argmax(counts))


def chunk_blocks(arr: da.Array, axis: int, target_bytes: int) -> list[tuple[int, int]]:
    """Ranges along ``axis`` that follow the dask chunks and hold about ``target_bytes`` each."""
    n = int(arr.shape[axis])
    other = [int(s) for i, s in enumerate(arr.shape) if i != axis]
    slab = int(np.prod(other, dtype=np.int64)) * arr.dtype.itemsize
    bounds = np.cumsum((0,) + tuple(int(c) for c in arr.chunks[axis]))
    blocks = []
    start = 0
    for end in bounds[1:]:
        end = int(end)
        if (end - start) * slab >= target_bytes or end == n:
            blocks.append((start, end))
            start = end
    return blocks


def step_blocks(length: int, step: int) -> list[tuple[int, int]]:
    """Ranges ``[b, b + step)`` covering ``0 .. length`` (the last one shorter)."""
    return [(b0, min(length, b0 + step)) for b0 in range(0, length, step)]


def region(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    """The (z, y, x) index of the slab ``start:stop`` along ``axis``."""
    return tuple(slice(start, stop) if i == axis else slice(None) for i in range(3))
