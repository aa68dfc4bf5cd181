"""Resolution pyramids: which coarser levels to write, and the 2x mean downsampling that makes them.

Each level halves the axes whose voxel size is within a factor 2 of the finest one (all three for the
isotropic output of a reconstruction; only y and x of a stack with thick sections, until they catch up with
z), so that every level stays as isotropic as the data allows. Levels are computed chunk by chunk from the
level before, never from the whole volume. numpy and dask only.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np

#: An automatic pyramid stops once the largest side of a level is at most this many voxels ...
MIN_SIDE = 256
#: ... or when it holds this many levels, level 0 included.
MAX_LEVELS = 8

Shape = tuple[int, int, int]
Factors = tuple[int, int, int]


def plan_levels(
    shape: Sequence[int], spacing: Sequence[float] | None = None, levels: int | None = None
) -> list[tuple[Shape, Factors]]:
    """Shapes of the coarser levels of a pyramid above ``shape``, and the factor of each from the one before.

    Parameters
    ----------
    shape : sequence of 3 int
        Shape (z, y, x) of level 0.
    spacing : sequence of 3 float, optional
        Voxel size of level 0; without it the voxels are taken as isotropic.
    levels : int, optional
        Number of levels wanted, level 0 included (fewer when no axis can be halved any more). None: as many
        as it takes to bring the largest side to at most :data:`MIN_SIDE`, and at most :data:`MAX_LEVELS`.

    Returns
    -------
    list of (shape, factors)
        One entry per level from level 1 on; ``factors`` are 1 or 2 per axis.
    """
    current = [int(s) for s in shape]
    scale = [float(s) for s in spacing] if spacing is not None else [1.0, 1.0, 1.0]
    wanted = MAX_LEVELS if levels is None else max(1, int(levels))
    out: list[tuple[Shape, Factors]] = []
    while len(out) + 1 < wanted:
        if levels is None and max(current) <= MIN_SIDE:
            break
        open_axes = [a for a in range(3) if current[a] > 1]
        if not open_axes:
            break
        finest = min(scale[a] for a in open_axes)
        # NOTE: an axis is halved while it is less than twice as coarse as the finest one, so thick sections
        # are kept until the lateral axes have caught up (relative tolerance for rounding in the voxel size).
        factors = tuple(2 if a in open_axes and scale[a] < 2 * finest * (1 - 1e-6) else 1 for a in range(3))
        current = [-(-n // f) for n, f in zip(current, factors)]
        scale = [s * f for s, f in zip(scale, factors)]
        out.append((tuple(current), factors))  # type: ignore[arg-type]
    return out


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The float type that averages ``dtype`` exactly enough (sums of 8 values, halves)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def downsample_block(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean of each 2-voxel window along every axis whose factor is 2, in the block's dtype.

    An odd length ends in a window of one voxel (its own value). Integer data is rounded to the nearest
    value (halves to even).

    Parameters
    ----------
    block : numpy.ndarray
        A (z, y, x) block whose windows start at index 0 on every halved axis.
    factors : sequence of 3 int
        1 or 2 per axis.

    Returns
    -------
    numpy.ndarray
        The downsampled block, ``ceil(n / f)`` long on each axis.
    """
    dtype = block.dtype
    x = np.asarray(block, dtype=_work_dtype(dtype))
    for axis, f in enumerate(factors):
        if f == 1 or x.shape[axis] == 0:
            continue
        if x.shape[axis] % 2:
            last = np.take(x, [x.shape[axis] - 1], axis=axis)
            x = np.concatenate([x, last], axis=axis)
        even = [slice(None)] * x.ndim
        odd = [slice(None)] * x.ndim
        even[axis] = slice(0, None, 2)
        odd[axis] = slice(1, None, 2)
        x = (x[tuple(even)] + x[tuple(odd)]) * 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dtype, copy=False)


def downsample(source: da.Array, factors: Sequence[int]) -> da.Array:
    """Lazy 2x mean downsampling of ``source`` along the axes whose factor is 2.

    Every chunk of ``source`` must start at an even index along the halved axes (chunks of even length but
    the last), so that each output chunk comes from exactly one input chunk.
    """
    for axis, f in enumerate(factors):
        if f == 2 and any(int(c) % 2 for c in source.chunks[axis][:-1]):
            raise ValueError(f"chunks of axis {axis} must be even to downsample it 2x: {source.chunks[axis]}")
    chunks = tuple(tuple(-(-int(c) // f) for c in cs) for cs, f in zip(source.chunks, factors))
    return source.map_blocks(downsample_block, factors=tuple(factors), dtype=source.dtype, chunks=chunks)
