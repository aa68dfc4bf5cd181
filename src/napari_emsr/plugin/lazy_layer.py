"""Layer data of a lazily restored volume that never makes napari compute a block on the GUI thread.

napari slices a layer by indexing its data (``np.asarray(data[key])``), on the GUI thread unless the user turned
napari's asynchronous rendering on. Given the core's dask array, one xz plane of an xz-restored layer computes
one chunk, but an xy or yz plane computes every chunk (the whole volume, hours on a real stack), and even one
fused block takes tens of seconds on a CPU. :class:`RestoredPlanes` stands between napari and the dask array:

- a request inside one block row along the axis the reconstruction is chunked along (the planes it is made
  for: xz planes page through y, yz planes through x) is answered from the blocks computed so far; the blocks
  it still lacks are asked for (:attr:`RestoredPlanes.wanted`), and a background worker computes them
  (:mod:`napari_emsr.plugin.workers.block_worker`); meanwhile the cubic interpolation of the same region stands in;
- any other plane (an xy plane, a yz plane of an xz-restored layer) is answered with the cubic interpolation of
  the input when that is small (at most :data:`INTERPOLATION_VOXELS` voxels), else with zeros; a whole volume
  (napari's 3D view) with zeros: it never computes the network.

What the last request showed (:attr:`RestoredPlanes.view`: ``"restored"``, ``"computing"``, ``"interpolated"``,
``"nothing"``) is reported through :attr:`RestoredPlanes.on_view` so that the panel can say so. The real lazy
array stays at :attr:`RestoredPlanes.dask` (export and scripts use it). Every method is thread-safe: napari may
slice in its own thread.

Importing this module is cheap: it imports neither torch, napari nor Qt.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np

#: Interpolated stand-ins larger than this (output voxels) are not computed on the GUI thread: zeros instead.
INTERPOLATION_VOXELS = 8_000_000
#: Bytes of restored blocks kept per layer (least recently used dropped first).
CACHE_BYTES = 512 * 2**20
#: Which axis of (z, y, x) each reconstruction is chunked along (the axis the user pages through).
PAGED_AXIS = {"xz": 1, "fuse": 1, "yz": 2, "uncertainty": 1, "xy": 0}
#: The axis names of (z, y, x).
AXES = "zyx"

RESTORED, COMPUTING, INTERPOLATED, NOTHING = "restored", "computing", "interpolated", "nothing"

_counter = threading.Lock()
_serial = [0]


def _next_serial() -> int:
    with _counter:
        _serial[0] += 1
        return _serial[0]


def _ranges(key: Any, shape: tuple[int, ...]) -> tuple[list[tuple[int, int, int]], list[bool]] | None:
    """``key`` as one (start, stop, step) per axis and whether that axis is dropped (an integer index).

    None for keys that are not integers and slices (fancy indexing): those get no restored data.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        return None
    ranges, dropped = [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            ranges.append((i, i + 1, 1))
            dropped.append(True)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 1:
                return None
            ranges.append((start, max(start, stop), step))
            dropped.append(False)
        else:
            return None
    return ranges, dropped


class RestoredPlanes:
    """napari layer data for a lazy reconstruction: restored where computed, interpolation or zeros elsewhere.

    Parameters
    ----------
    array : dask.array.Array
        The lazy reconstruction (:func:`napari_emsr.reconstruct.reconstruct`), (z, y, x).
    planes : str
        ``"xz"``, ``"yz"`` or ``"fuse"``: which axis it is chunked along (:data:`PAGED_AXIS`).
    interpolate : callable, optional
        ``interpolate(z0, z1, zstep, yslice, xslice)`` -> the cubic interpolation of that output region
        (float or the output dtype); see :func:`cubic_region`. Without it, stand-ins are zeros.
    label : str
        What the panel calls this reconstruction ("xz-restored").
    joint : dask.array.Array, optional
        A stacked array ``(k, z, y, x)`` (chunked whole along its first axis) whose part ``part`` is ``array``:
        a block is then computed once for every part, and the parts of the partners (:func:`link`) are
        filled with it (the fused volume and its uncertainty, :func:`napari_emsr.reconstruct.reconstruct_pair`).
    part : int
        Which part of ``joint`` this is.

    Attributes
    ----------
    dask : dask.array.Array
        The lazy reconstruction itself.
    view : str
        What the last request was answered with: ``"restored"``, ``"computing"`` (restored blocks asked for,
        interpolation meanwhile), ``"interpolated"`` or ``"nothing"``.
    on_view : callable or None
        Called as ``on_view(self, view)`` when :attr:`view` changes, from the thread that sliced.
    on_wanted : callable or None
        Called as ``on_wanted(self)`` when new blocks are asked for, from the thread that sliced.
    computed : int
        Blocks computed so far (by :meth:`compute_block`); ``seconds`` holds how long each took.
    """

    def __init__(
        self,
        array: Any,
        planes: str,
        interpolate: Callable | None = None,
        label: str = "",
        joint: Any = None,
        part: int = 0,
    ):
        self.dask = array
        self.joint = joint
        self.part = int(part)
        self.partners: list[RestoredPlanes] = []
        self.planes = planes
        self.label = label or planes
        self.axis = PAGED_AXIS[planes]
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.chunks = tuple(tuple(int(c) for c in cs) for cs in array.chunks)
        self._bounds = [np.cumsum((0, *cs)) for cs in self.chunks]
        self._interpolate = interpolate
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._stand_ins: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.wanted: list[tuple[int, ...]] = []
        self.wanted_at = 0
        self.wanted_time = 0.0
        self.last_needed: frozenset[tuple[int, ...]] = frozenset()
        self.view = ""
        self.last_index: int | None = None
        self.on_view: Callable[[RestoredPlanes, str], Any] | None = None
        self.on_wanted: Callable[[RestoredPlanes], Any] | None = None
        self.computed = 0
        self.seconds: list[float] = []

    def __repr__(self) -> str:
        return f"RestoredPlanes({self.label}, shape={self.shape}, dtype={self.dtype}, chunked along {AXES[self.axis]})"

    def __len__(self) -> int:
        return self.shape[0]

    # ------------------------------------------------------------------------------------------ napari's side
    def __getitem__(self, key: Any) -> np.ndarray:
        parsed = _ranges(key, self.shape)
        if parsed is None:
            self._set_view(NOTHING)
            return np.zeros(np.broadcast_to(np.zeros((), np.bool_), self.shape)[key].shape, self.dtype)
        ranges, dropped = parsed
        out_shape = tuple(len(range(*r)) for r, d in zip(ranges, dropped) if not d)
        touched = [self._blocks_along(ax, *r[:2]) for ax, r in enumerate(ranges)]
        served = len(touched[self.axis]) == 1
        if served:
            needed = list(product(*touched))
            with self._lock:
                missing = [b for b in needed if b not in self._cache]
                if not missing:
                    out = self._assemble(ranges, dropped, needed)
                else:
                    self.wanted = missing
                    self.wanted_at = _next_serial()
                    self.wanted_time = time.perf_counter()
                self.last_needed = frozenset(needed)
                self.last_index = ranges[self.axis][0]
            if not missing:
                self._set_view(RESTORED)
                return out
            if self.on_wanted is not None:
                self.on_wanted(self)
            self._set_view(COMPUTING)
            return self._stand_in(ranges, dropped, out_shape)
        return self._stand_in(ranges, dropped, out_shape)

    def _set_view(self, view: str) -> None:
        if view != self.view:
            self.view = view
            if self.on_view is not None:
                self.on_view(self, view)

    def _blocks_along(self, axis: int, start: int, stop: int) -> range:
        bounds = self._bounds[axis]
        if stop <= start:
            return range(0)
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, stop, side="left")) - 1
        return range(first, last + 1)

    def _assemble(self, ranges: list, dropped: list, needed: list) -> np.ndarray:
        """The requested region from cached blocks (called with the lock held)."""
        (z0, z1, _), (y0, y1, _), (x0, x1, _) = ranges
        region = np.empty((z1 - z0, y1 - y0, x1 - x0), self.dtype)
        for b in needed:
            block = self._cache[b]
            self._cache.move_to_end(b)
            lo = [int(self._bounds[ax][b[ax]]) for ax in range(3)]
            src, dst = [], []
            for ax, (start, stop, _) in enumerate(ranges):
                s0, s1 = max(start, lo[ax]), min(stop, lo[ax] + block.shape[ax])
                src.append(slice(s0 - lo[ax], s1 - lo[ax]))
                dst.append(slice(s0 - start, s1 - start))
            region[tuple(dst)] = block[tuple(src)]
        index = tuple(0 if d else slice(None, None, r[2]) for r, d in zip(ranges, dropped))
        return region[index]

    def _stand_in(self, ranges: list, dropped: list, out_shape: tuple[int, ...]) -> np.ndarray:
        """Cubic interpolation of the region when it is small enough, else zeros (nothing computed)."""
        voxels = int(np.prod(out_shape)) if out_shape else 1
        served = len(self._blocks_along(self.axis, *ranges[self.axis][:2])) == 1
        # NOTE: a volume (napari's 3D view: no axis one plane thick; napari asks planes as slices of one) gets
        # nothing: the panel hides the layer in 3D, and napari slices hidden layers too.
        volume = all(len(range(*r)) > 1 for r in ranges)
        if self._interpolate is None or voxels > INTERPOLATION_VOXELS or volume:
            if not served:
                self._set_view(NOTHING)
            return np.broadcast_to(np.zeros((), self.dtype), out_shape)
        key = tuple(ranges)
        with self._lock:
            hit = self._stand_ins.get(key)
            if hit is not None:
                self._stand_ins.move_to_end(key)
        if hit is None:
            (z0, z1, zs), (y0, y1, ys), (x0, x1, xs) = ranges
            region = np.asarray(self._interpolate(z0, z1, zs, slice(y0, y1, ys), slice(x0, x1, xs)))
            hit = _cast(region, self.dtype)
            with self._lock:
                self._stand_ins[key] = hit
                while len(self._stand_ins) > 8:
                    self._stand_ins.popitem(last=False)
        if not served:
            self._set_view(INTERPOLATED)
        index = tuple(0 if d else slice(None) for d in dropped)
        return hit[index]

    # ------------------------------------------------------------------------------------- the worker's side
    def next_wanted(self) -> tuple[int, ...] | None:
        """The next block asked for and not computed yet (None when there is none); it leaves the list."""
        with self._lock:
            while self.wanted:
                block = self.wanted.pop(0)
                if block not in self._cache:
                    return block
            return None

    def forget_wanted(self) -> None:
        """Drop every block asked for (the user cancelled)."""
        with self._lock:
            self.wanted = []

    def compute_block(self, block: tuple[int, ...]) -> np.ndarray:
        """Compute one block of the reconstruction (slow: run it in a worker thread)."""
        return self.compute_blocks(block)[0][1]

    def compute_blocks(self, block: tuple[int, ...]) -> list[tuple[RestoredPlanes, np.ndarray]]:
        """Compute one block, and with it the same block of the partners (one network run for all).

        Returns
        -------
        list of (RestoredPlanes, numpy.ndarray)
            This layer data's block first, then each partner's (to :meth:`store` in it).
        """
        t0 = time.perf_counter()
        if self.joint is None:
            out = [(self, np.asarray(self.dask.blocks[block].compute(scheduler="synchronous")))]
        else:
            parts = np.asarray(self.joint.blocks[(0, *block)].compute(scheduler="synchronous"))
            out = [(self, parts[self.part])] + [(p, parts[p.part]) for p in self.partners]
        self.computed += 1
        self.seconds.append(time.perf_counter() - t0)
        return out

    def store(self, block: tuple[int, ...], value: np.ndarray) -> bool:
        """Keep a computed block; returns whether the last request needs it (the layer should be refreshed)."""
        with self._lock:
            if block not in self._cache:
                self._cache[block] = value
                self._cached_bytes += value.nbytes
            while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
            return block in self.last_needed

    def block_span(self, block: tuple[int, ...]) -> tuple[int, int]:
        """First and last index (inclusive) of ``block`` along the paged axis."""
        bounds = self._bounds[self.axis]
        return int(bounds[block[self.axis]]), int(bounds[block[self.axis] + 1]) - 1

    def has_block(self, block: tuple[int, ...]) -> bool:
        """Whether ``block`` is computed and kept."""
        with self._lock:
            return block in self._cache

    def describe(self, view: str | None = None) -> str:
        """One line for people on what the layer shows (``view``: default the last one)."""
        view = view or self.view
        paged = AXES[self.axis]
        if view == RESTORED:
            return f"{self.label}: restored plane {paged} = {self.last_index}."
        if view == COMPUTING:
            return (
                f"{self.label}: restoring the block of {paged} = {self.last_index} in the background "
                f"({'cubic interpolation' if self._interpolate is not None else 'nothing'} shown meanwhile)."
            )
        planes = ("xy", "xz", "yz")[self.axis]
        if view == INTERPOLATED:
            how = "cubic interpolation"
        elif self._interpolate is None:
            how = "nothing"
        else:
            how = "nothing (3D, or a plane too large to interpolate)"
        where = "the default xy view" if self.axis == 0 else "Side by side in the panel, or roll the axes"
        return (f"{self.label} shows {how} in this view: it is restored in {planes} planes only (page through "
                f"{paged}: {where}).")


def link(*planes: RestoredPlanes) -> None:
    """Make layer data that are parts of one ``joint`` array partners: computing a block of one fills them all."""
    for one in planes:
        one.partners = [other for other in planes if other is not one]


def _cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(a), info.min, info.max).astype(dtype)
    return a.astype(dtype, copy=False)


def cubic_region(source: Any, factor: float, order: int = 3) -> Callable:
    """A function giving the interpolation (along z, as the cubic method does) of an output region.

    Parameters
    ----------
    source : array-like
        The anisotropic input (z, y, x), numpy or dask.
    factor : float
        F: output slice ``k`` lies at input slice ``k / F``.
    order : int
        Spline order (3: cubic).

    Returns
    -------
    callable
        ``f(z0, z1, zstep, yslice, xslice)`` -> float32 array (len(range(z0, z1, zstep)), ny', nx'). Only the
        input slices near the output ones are read (a window of a few slices; the whole z column when the region
        spans it, where it equals the cubic method).
    """
    from napari_emsr.interpolation import interpolate_axis

    nz = int(source.shape[0])

    def interpolate(z0: int, z1: int, zstep: int, ys: slice, xs: slice) -> np.ndarray:
        positions = np.arange(z0, z1, zstep, dtype=np.float64) / float(factor)
        lo = max(0, int(math.floor(positions.min())) - 4) if positions.size else 0
        hi = min(nz, int(math.ceil(positions.max())) + 5) if positions.size else 1
        region = source[lo:hi, ys, xs]
        region = region.compute() if hasattr(region, "compute") else np.asarray(region)
        return interpolate_axis(region, positions - lo, order, axis=0)

    return interpolate


def lateral_cubic_region(source: Any, factor: float) -> Callable:
    """A function giving the lateral cubic B-spline interpolation of an output region of a paired model's result.

    The stand-in of an xy-restored layer (:func:`napari_emsr.methods.paired.apply.lateral`) while its planes are
    computed: HR pixel ``j`` lies at LR ``(j + 0.5) / s - 0.5``
    (:func:`napari_emsr.methods.paired.registration.hr_positions`),
    the grid the model is applied on.

    Parameters
    ----------
    source : array-like
        The LR volume (z, y, x), numpy or dask.
    factor : float
        s, HR pixels per LR pixel (1 for an enhancer: the stand-in is the input itself).

    Returns
    -------
    callable
        ``f(z0, z1, zstep, yslice, xslice)`` -> float32 array; only the LR rows and columns near the region
        are read.
    """
    from napari_emsr.interpolation import interpolate_axis
    from napari_emsr.methods.paired.registration import hr_positions

    _, ny, nx = (int(n) for n in source.shape)
    ho, wo = max(1, int(math.floor(ny * factor + 0.5))), max(1, int(math.floor(nx * factor + 0.5)))

    def window(n_out: int, n_in: int, sl: slice) -> tuple[np.ndarray, int, int]:
        pos = hr_positions(n_out, factor)[sl]
        if not pos.size:
            return pos, 0, 1
        lo = max(0, int(math.floor(pos.min())) - 8)
        return pos, lo, min(n_in, int(math.ceil(pos.max())) + 9)

    def read(key: tuple) -> np.ndarray:
        region = source[key]
        return np.asarray(region.compute() if hasattr(region, "compute") else region, np.float32)

    def interpolate(z0: int, z1: int, zstep: int, ys: slice, xs: slice) -> np.ndarray:
        if factor == 1.0:
            return read((slice(z0, z1, zstep), ys, xs))
        py, y0, y1 = window(ho, ny, ys)
        px, x0, x1 = window(wo, nx, xs)
        region = read((slice(z0, z1, zstep), slice(y0, y1), slice(x0, x1)))
        region = interpolate_axis(region, py - y0, 3, axis=1)
        return interpolate_axis(region, px - x0, 3, axis=2)

    return interpolate
