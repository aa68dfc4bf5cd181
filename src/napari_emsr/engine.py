"""The reconstruction engine: what every chunk task of a lazy reconstruction runs (one key of the dask graph).

An :class:`Engine` holds the source array, the model and the tiling parameters; its :meth:`Engine.block` computes
one output chunk: reads the input rows it needs (with a margin for the network's context), interpolates them along
z onto the output grid, restores every axial plane in it through the model's one predict path
(:func:`napari_emsr.model.predict`: tiles, blending, bf16 on CUDA) and returns the chunk in the input dtype.
:mod:`napari_emsr.reconstruct` builds the graph on it; the paired method's lateral engine is a subclass.

Out of memory (a GPU's as a rule): a chunk whose network call runs out of memory is restored again with half
the batch, down to one plane (the same output), then with tiles of half the size, down to :data:`MIN_TILE` px
(tiles are blended as usual, so the output differs from that of whole planes only near the seams, by rounding
as a rule); the sizes that worked are kept for the next chunks of this process. Only then it gives up with an
:class:`~napari_emsr.errors.EMSRError` that says what to do.

NaN or inf in the input: every chunk checks the input block it reads (float data; a test on data already in
memory) and stops with an :class:`~napari_emsr.errors.InputError` naming the plane, before interpolating or
restoring it: the up-front check (:func:`napari_emsr.io.finite_check`) reads only a sample of planes.

Same bits on a cluster: torch's CPU kernels round differently with another number of threads (one thread against
several: a grey level in a few voxels per million), so every chunk runs the network with the thread count of the
process that built the reconstruction (at most the cores the computing process may use): a ``local:N`` cluster's
workers give the single-process result bit for bit.

Stopping: an engine made with ``stop`` calls it before each chunk and each batch of planes; a true answer stops
the computation with :class:`Stopped` (``stop`` may also raise its own exception). It stays in this process: an
engine sent to a cluster's workers goes without it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import numpy as np

from .errors import EMSRError, InputError
from .geometry import output_positions
from .interpolation import interpolate_axis
from .io.lazy import compute

log = logging.getLogger(__name__)

#: The engine's mode for :func:`napari_emsr.reconstruct.reconstruct_pair`: fused chunks and their uncertainty,
#: stacked.
PAIR = "pair"
#: Smallest tile (px) an out-of-memory retry goes down to (never below twice the tiles' overlap).
MIN_TILE = 32


class Stopped(EMSRError):
    """A computation stopped because its ``stop()`` said so; what an export wrote stays resumable."""


class Engine:
    """What every chunk task needs: the source array, the model and the tiling parameters (one graph key)."""

    def __init__(self, source, model, factor, order, planes, device, tile, overlap, batch, margin, out_dtype,
                 deband: bool = False, *, name: str | None = None, axis: int = 0,
                 stop: Callable[[], bool] | None = None, compiled: bool = False, consistent: bool = False):
        self.source = source
        self.compiled = bool(compiled)  # the network through torch.compile (EMSRModel.network)
        self.stop = stop  # checked before each chunk and each batch of planes; never sent to other processes
        self.name = name  # the input's file (for messages), None for an array
        self.axis = int(axis)  # the input axis that source's first axis is (planes are named by it)
        # NOTE: the network's CPU kernels round differently with another thread count: every process that computes
        # a chunk uses this one (see the module docstring). None: no network, nothing to set.
        self.threads = _torch_threads() if model is not None else None
        self.model = model
        self.factor = factor
        self.order = order
        self.planes = planes
        self.device = device
        self.tile = tile
        self.overlap = overlap
        self.batch = batch
        self.margin = margin
        self.out_dtype = np.dtype(out_dtype)
        self.deband = bool(deband) and model is not None
        self._debander = None  # the section-phase filters (napari_emsr.deband), fitted on first use
        # section consistency (napari_emsr.consistency): built on first use; False once found not to apply
        self.consistent = bool(consistent) and model is not None
        self._consistency = None
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()  # one thread fits the deband filters; the others wait for them
        self._resolved = None
        self._fit: tuple[int, int] | None = None  # (tile, batch) this process fell back to after running out of memory

    def __getstate__(self):
        # NOTE: the filters are fitted here, once, before the engine goes to worker processes: every worker then
        # applies the same ones (fitting in each would also cost each worker the probe).
        self.debander()
        d = dict(self.__dict__)
        d.pop("_lock")
        d.pop("_fit_lock")
        d["_resolved"] = None
        d["_consistency"] = None  # a factorised matrix (not picklable): each process builds its own
        d["_fit"] = None  # another process has another device and memory
        d["stop"] = None  # a callable of this process (the panel's cancel flag) means nothing elsewhere
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        from .cluster import quiet_our_errors

        quiet_our_errors()  # in a worker: a chunk's InputError reaches the client, not the log with a traceback

    # ------------------------------------------------------------------ net
    def _device(self) -> str:
        with self._lock:
            if self._resolved is None:
                from .device import resolve_device

                self._resolved = resolve_device(self.device)
            return self._resolved

    def restore(self, planes: np.ndarray) -> np.ndarray:
        """Run the network on (N, H, W) normalised float32 planes (the model's one predict path); out of memory,
        again with smaller batches, then smaller tiles (see the module docstring)."""
        from .model import predict

        dev = self._device()
        _use_threads(self.threads)
        net = self.model.network(dev, compiled=self.compiled)
        with self._lock:
            # NOTE: predict's own default batch (8 on a CPU, 32 on CUDA), made explicit so that it can be halved.
            tile, batch = self._fit or (self.tile, self.batch or (32 if dev.startswith("cuda") else 8))
        while True:
            try:
                return predict(net, planes, dev, tile=tile, overlap=self.overlap, batch=batch, stop=self.check_stop)
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if not _out_of_memory(exc):
                    raise
            # NOTE: out of the except block, so that the failed call's frames (and their tensors) are gone
            tile, batch = self._smaller(dev, tile, batch, planes.shape)

    def check_stop(self) -> None:
        """Raise :class:`Stopped` when ``stop()`` says so (nothing without ``stop``)."""
        if self.stop is not None and self.stop():
            raise Stopped("stopped; run the same export again to resume it")

    def _smaller(self, dev: str, tile: int, batch: int, shape: tuple[int, ...]) -> tuple[int, int]:
        """The next (tile, batch) to try after running out of memory with these, kept for later chunks."""
        from .device import free_memory

        free_memory(dev)
        n, h, w = (int(s) for s in shape)
        batch, tile = min(batch, n), min(tile, max(h, w))
        floor = max(MIN_TILE, 2 * self.overlap + 1)
        if batch > 1:
            new = (tile, batch // 2)
        elif tile // 2 >= floor:
            new = (tile // 2, 1)
        else:
            raise EMSRError(
                f"{dev} ran out of memory restoring planes of {h} x {w} px even one at a time in {tile}-px tiles: "
                "free the device (other programs or notebooks holding its memory), use a smaller network, or "
                "run on another device (--device cpu)"
            )
        log.warning("out of memory on %s with batch %d and %d-px tiles: retrying with batch %d and %d-px tiles",
                    dev, batch, tile, new[1], new[0])
        with self._lock:
            if self._fit is None or new[0] * new[0] * new[1] < self._fit[0] * self._fit[0] * self._fit[1]:
                self._fit = new
        return new

    # ----------------------------------------------------------------- block
    def _axes(self) -> tuple[int, ...]:
        """The lateral axes the section-phase filters act along: those restored (x in xz planes, y in yz)."""
        return {"xz": (2,), "yz": (1,)}.get(self.planes, (1, 2))

    def debander(self):
        """The section-phase filters (:mod:`napari_emsr.deband`), fitted once per engine on a central crop of the
        restored volume; None when debanding is off."""
        if not self.deband:
            return None
        # NOTE: not self._lock, which restoring the probe takes; without a lock the first chunks of a threaded
        # compute would each restore the probe.
        with self._fit_lock:
            if self._debander is None:
                from . import deband

                y0, y1, x0, x1 = deband.probe_region(self.source.shape[1:])
                probe, _ = self._restored(y0, y1, x0, x1)
                self._debander = deband.fit(probe, self.factor, self._axes(), banded=deband.BANDED)
                log.info("deband: the restored probe's banding ratio is %.2f: %s", self._debander.banding,
                         "planes filtered by their place between sections" if self._debander.active
                         else "left as it is")
            return self._debander

    def consistency(self):
        """The projection onto volumes that agree with the stack's sections (:mod:`napari_emsr.consistency`), for
        the profile the model was trained with; None when off or when the profile is too thin for it."""
        if not self.consistent:
            return None
        with self._fit_lock:
            if self._consistency is None:
                from .consistency import Consistency, applies, kernel_of

                k = kernel_of(dict(self.model.config.get("options") or {}), self.factor)
                self._consistency = Consistency(self.source.shape[0], self.factor, k) if applies(k) else False
                if not self._consistency:
                    log.info("section consistency: the model's section profile is point-like; left as it is")
            return self._consistency or None

    def block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The output chunk (Z_out, y1 - y0, x1 - x0)."""
        self.check_stop()
        src = self.source
        nz, ny, nx = src.shape
        if self.model is None:
            a = np.asarray(self.read(src[:, y0:y1, x0:x1]), np.float32)
            return self._cast(interpolate_axis(a, output_positions(nz, self.factor), self.order, axis=0))
        filt = self.debander()
        if filt is None or not filt.active:
            out, gap = self._restored(y0, y1, x0, x1)
        else:  # the chunk with `radius` px of its neighbours along the filtered axes, filtered, cropped
            r, axes = filt.radius, self._axes()
            ey0, ey1 = (max(0, y0 - r), min(ny, y1 + r)) if 1 in axes else (y0, y1)
            ex0, ex1 = (max(0, x0 - r), min(nx, x1 + r)) if 2 in axes else (x0, x1)
            out, gap = self._restored(ey0, ey1, ex0, ex1)
            crop = (slice(None), slice(y0 - ey0, y0 - ey0 + (y1 - y0)), slice(x0 - ex0, x0 - ex0 + (x1 - x0)))
            out = filt.apply(out)[crop]
            gap = None if gap is None else gap[crop]
        cons = self.consistency()
        if cons is not None:  # column by column along z: the chunk's own columns are all it needs
            out = cons.apply(out, self.model.norm.apply(self.read(src[:, y0:y1, x0:x1])))
        if self.planes == PAIR:  # the fused chunk and where its two directions disagree, in input intensities
            return np.stack([self._cast(self.model.norm.invert(out)), self._cast(gap)])
        return self._cast(self.model.norm.invert(out))

    def _restored(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The restored region (Z_out, y1 - y0, x1 - x0), normalised float (xz, yz or their mean), and for the
        pair mode |xz - yz| in input intensities (else None)."""
        src = self.source
        nz, ny, nx = src.shape
        m = self.margin
        ex0, ex1 = max(0, x0 - m), min(nx, x1 + m)
        ey0, ey1 = max(0, y0 - m), min(ny, y1 + m)
        both = self.planes in ("fuse", PAIR)
        # NOTE: both directions take their planes from one interpolated block (the chunk with its margins on all
        # sides): one read and one interpolation instead of two; interpolation along z is column by column, so
        # every plane is the same as read on its own.
        block = self._interp(src[:, ey0:ey1, ex0:ex1]) if both else None  # (Z, yc, xc)
        results = []
        if self.planes in ("xz", "fuse", PAIR):
            a = block[:, y0 - ey0 : y1 - ey0, :] if both else self._interp(src[:, y0:y1, ex0:ex1])
            r = self.restore(np.ascontiguousarray(a.transpose(1, 0, 2)))  # planes along y: (yc, Z, xc)
            results.append(r.transpose(1, 0, 2)[:, :, x0 - ex0 : x0 - ex0 + (x1 - x0)])
        if self.planes in ("yz", "fuse", PAIR):
            a = block[:, :, x0 - ex0 : x1 - ex0] if both else self._interp(src[:, ey0:ey1, x0:x1])
            r = self.restore(np.ascontiguousarray(a.transpose(2, 0, 1)))  # planes along x: (xc, Z, yc)
            results.append(r.transpose(1, 2, 0)[:, y0 - ey0 : y0 - ey0 + (y1 - y0), :])
        out = results[0] if len(results) == 1 else 0.5 * (results[0] + results[1])
        gap = None
        if self.planes == PAIR:
            gap = np.abs(self.model.norm.invert(results[0]) - self.model.norm.invert(results[1]))
        return out, gap

    def read(self, region, z0: int = 0) -> np.ndarray:
        """The input block ``region`` (its first plane is plane ``z0`` of the source) in memory, checked: NaN or
        inf in it stops the reconstruction with an InputError naming the planes (float data only)."""
        a = np.asarray(compute(region, scheduler="synchronous"))
        if a.dtype.kind in "fc":
            finite = np.isfinite(a)
            if not finite.all():
                bad = (np.flatnonzero(~finite.reshape(len(a), -1).all(axis=1)) + int(z0)).tolist()
                raise InputError(self._not_finite(bad))
        return a

    def _not_finite(self, planes: list[int]) -> str:
        what = f"the input {self.name}" if self.name else "the volume"
        s = "s" if len(planes) > 1 else ""
        shown = ", ".join(str(p) for p in planes[:5]) + (f" and {len(planes) - 5} more" if len(planes) > 5 else "")
        where = f"z plane{s} {shown}" if self.axis == 0 else f"plane{s} {shown} along axis {self.axis}"
        return (f"{what} holds NaN or infinite values in {where} (found while reconstructing; the check before it "
                "looks at a few planes only); nothing finished was written: replace them (e.g. with "
                "numpy.nan_to_num) or crop them away, then run again")

    def _interp(self, region) -> np.ndarray:
        a = self.model.norm.apply(self.read(region))
        return interpolate_axis(a, output_positions(a.shape[0], self.factor), self.order, axis=0)

    def _cast(self, a: np.ndarray) -> np.ndarray:
        dt = self.out_dtype
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(a), info.min, info.max).astype(dt)
        return a.astype(dt)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether a torch error is an allocation that failed (CUDA, MPS or the CPU allocator)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _use_threads(threads: int | None) -> None:
    """torch's CPU thread count set to ``threads`` (at most the cores this process may use), unless it is already."""
    if not threads:
        return
    import torch

    n = max(1, min(int(threads), _usable_cores()))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
