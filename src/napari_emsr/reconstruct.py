"""Lazy isotropic reconstruction: a dask array whose chunks run the network on batches of xz (or yz) planes.

``reconstruct(volume, model)`` computes nothing. Each output chunk is one ``map_blocks`` task that reads the
input rows it needs (with a margin for the network's context), interpolates them along z onto the output grid,
restores every axial plane in it through the model's one predict path (:func:`napari_emsr.model.predict`:
tiles, blending, bf16 on CUDA) and returns the chunk in the input dtype. The engine (source, model, options) is
one key of the graph, so a ``dask.distributed`` cluster ships it to each worker once, and the built network is
cached per device in each process.

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

Geometry (:mod:`napari_emsr.geometry`, a DESIGN.md contract): input slice ``i`` lies at output z = ``i * F``;
output spacing equals the lateral spacing.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .degrade import interpolate_axis
from .errors import EMSRError, InputError
from .geometry import check_axis, from_front, front_order, output_length, output_positions, resolve_factor, to_front
from .geometry import output_spacing as grid_spacing
from .methods import get_method

log = logging.getLogger(__name__)

PLANES = ("xz", "yz", "fuse")
#: The engine's mode for :func:`reconstruct_pair`: fused chunks and their uncertainty, stacked.
PAIR = "pair"
#: Smallest tile (px) an out-of-memory retry goes down to (never below twice the tiles' overlap).
MIN_TILE = 32


def output_spacing(volume, axis: int = 0) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) of the isotropic output of ``volume``: the lateral spacing on every axis."""
    return grid_spacing(getattr(volume, "spacing", None), axis)


def _compute(a):
    return a.compute(scheduler="synchronous") if hasattr(a, "compute") else np.asarray(a)


class _Engine:
    """What every chunk task needs: the source array, the model and the tiling parameters (one graph key)."""

    def __init__(self, source, model, factor, order, planes, device, tile, overlap, batch, margin, out_dtype,
                 deband: bool = False, *, name: str | None = None, axis: int = 0):
        self.source = source
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
        d["_fit"] = None  # another process has another device and memory
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
        net = self.model.network(dev)
        with self._lock:
            # NOTE: predict's own default batch (8 on a CPU, 32 on CUDA), made explicit so that it can be halved.
            tile, batch = self._fit or (self.tile, self.batch or (32 if dev.startswith("cuda") else 8))
        while True:
            try:
                return predict(net, planes, dev, tile=tile, overlap=self.overlap, batch=batch)
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if not _out_of_memory(exc):
                    raise
            # NOTE: out of the except block, so that the failed call's frames (and their tensors) are gone
            tile, batch = self._smaller(dev, tile, batch, planes.shape)

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

    def block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The output chunk (Z_out, y1 - y0, x1 - x0)."""
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
        if self.planes == PAIR:  # the fused chunk and where its two directions disagree, in input intensities
            return np.stack([self._cast(self.model.norm.invert(out)), self._cast(gap)])
        return self._cast(self.model.norm.invert(out))

    def _restored(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The restored region (Z_out, y1 - y0, x1 - x0), normalised float (xz, yz or their mean), and for the
        pair mode |xz - yz| in input intensities (else None)."""
        src = self.source
        nz, ny, nx = src.shape
        m = self.margin
        results = []
        if self.planes in ("xz", "fuse", PAIR):
            ex0, ex1 = max(0, x0 - m), min(nx, x1 + m)
            a = self._interp(src[:, y0:y1, ex0:ex1])  # (Z, yc, xc)
            r = self.restore(np.ascontiguousarray(a.transpose(1, 0, 2)))  # planes along y: (yc, Z, xc)
            results.append(r.transpose(1, 0, 2)[:, :, x0 - ex0 : x0 - ex0 + (x1 - x0)])
        if self.planes in ("yz", "fuse", PAIR):
            ey0, ey1 = max(0, y0 - m), min(ny, y1 + m)
            a = self._interp(src[:, ey0:ey1, x0:x1])  # (Z, yc, xc)
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
        a = np.asarray(_compute(region))
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


def _chunk(engine: _Engine, block_info=None) -> np.ndarray:
    """One output chunk: ``map_blocks`` says where it lies, the engine computes it."""
    *_, (y0, y1), (x0, x1) = block_info[None]["array-location"]
    return engine.block(int(y0), int(y1), int(x0), int(x1))


def reconstruct(
    volume,
    model="cubic",
    *,
    planes: str = "xz",
    factor: float | None = None,
    axis: int | None = None,
    device: str = "auto",
    chunks: tuple[int, int] | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    margin: int = 32,
    deband: bool = True,
):
    """The isotropic volume as a lazy dask array in the input dtype.

    Parameters
    ----------
    volume : Volume or array
        The anisotropic stack, (z, y, x) with z the anisotropic axis (or ``axis``).
    model : EMSRModel, path, or "cubic"/"linear"
        A trained model (its file), or an interpolation-only method.
    planes : {"xz", "yz", "fuse"}
        Restore xz planes, yz planes, or both and average them (as CARE does).
    factor : float, optional
        Needed for interpolation without voxel size; for a model it must agree with the model's factor.
    chunks : (int, int), optional
        Output chunk size along y and x (z is never split). Default: one plane per chunk along the axis the
        planes are indexed by (so showing one xz plane computes one chunk), the whole other lateral axis up to
        1024 px; for ``"fuse"``, 64 rows of xz planes (a fused plane needs the yz planes that cross it).
    tile, overlap, batch : int, optional
        Planes larger than ``tile`` are restored in tiles overlapping by ``overlap`` px, blended smoothly
        (defaults :data:`napari_emsr.model.TILE` and :data:`~napari_emsr.model.TILE_OVERLAP`); ``batch``
        planes per network call (default 8 on a CPU, 32 on a GPU, where batch 8 leaves it idle).
    margin : int
        Extra lateral context (px) read around a chunk for the network.
    deband : bool
        With a trained model: filter each output plane laterally by its position between sections so that the
        planes between sections have the sections' detail (:mod:`napari_emsr.deband`; fitted on a central crop
        the first time a chunk is computed). Without it a large factor bands with the section period.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    from .geometry import check_factor
    from .io import as_volume, finite_check
    from .model import TILE, TILE_OVERLAP, EMSRModel

    if planes not in PLANES and planes != PAIR:
        raise InputError(f"planes must be one of {', '.join(PLANES)}, got {planes!r}")
    vol = volume if hasattr(volume, "spacing") and hasattr(volume, "data") else as_volume(volume)
    if factor is not None:
        factor = check_factor(factor)
    # NOTE: a sample of planes is read (float data only): NaN or inf would come out as NaN, or as zeros once cast.
    finite_check(vol.data)
    if isinstance(model, (str, Path)) and str(model) not in ("cubic", "linear"):
        model = EMSRModel.load(model)
    if isinstance(model, EMSRModel):
        model.validate()
        if model.config.get("apply") == "lateral":  # a paired model (issue 10) makes xy planes finer, not z
            raise InputError("this model super-resolves xy planes (method paired): apply it with `emsr apply` or "
                             "napari_emsr.lateral_apply.lateral, not as an isotropic reconstruction")
        ax = model.axis if axis is None else check_axis(axis)
        given = factor if factor is not None or vol.spacing is None else resolve_factor(None, vol.spacing, ax)
        model.check_compatible(given, ax)
        f, order, net_model = model.factor, model.order, model
    else:
        meth = get_method(str(model))
        if meth.trains:
            raise InputError(f"method {meth.name!r} needs a trained model: train one first (emsr train)")
        ax = 0 if axis is None else check_axis(axis)
        f, order, net_model = resolve_factor(factor, vol.spacing, ax), meth.order, None
    f = resolve_factor(f, None, ax)
    src = to_front(vol.data, ax)
    nz, ny, nx = src.shape
    zo = output_length(nz, f)
    if chunks is None:
        if planes == "yz":
            chunks = (min(ny, 1024), 1)
        elif planes in ("fuse", PAIR):
            # NOTE: a fused chunk restores every yz plane crossing it over its rows plus 2 x margin: with one-row
            # chunks that is 65x the work of the chunk itself; 64 rows bring it to about 3x (xz rows + yz rows
            # with margins), and the next 63 planes come free.
            chunks = (min(ny, 64), min(nx, 1024))
        else:
            chunks = (1, min(nx, 1024))
    cy, cx = max(1, int(chunks[0])), max(1, int(chunks[1]))
    out_dtype = src.dtype
    eng = _Engine(src, net_model, f, order, planes, device, int(tile or TILE),
                  int(TILE_OVERLAP if overlap is None else overlap), int(batch or 0), int(margin), out_dtype,
                  deband=deband, name=getattr(vol, "source", None), axis=ax)
    token = tokenize(id(eng), str(src.name) if hasattr(src, "name") else id(src), f, order, planes, chunks,
                     eng.deband)
    # NOTE: the engine is one key of the graph (a named Delayed whose contents are not traversed): every chunk
    # task refers to it, so a distributed scheduler sends the model to each worker once, not with every task.
    engine = dask.delayed(eng, name=f"emsr-engine-{token}", traverse=False)
    stacked = ((2,),) if planes == PAIR else ()
    arr = da.map_blocks(
        _chunk,
        engine,
        name=f"emsr-reconstruct-{token}",
        chunks=(*stacked, (zo,), tuple(_split(ny, cy)), tuple(_split(nx, cx))),
        dtype=out_dtype,
        meta=np.empty((0,) * (3 + len(stacked)), out_dtype),
    )
    if planes == PAIR:  # (2, z, y, x): the stacked axis stays first
        return arr if ax == 0 else arr.transpose((0, *(1 + int(i) for i in np.argsort(front_order(ax)))))
    return from_front(arr, ax)


def _split(n: int, c: int) -> list[int]:
    return [min(c, n - s) for s in range(0, n, c)]


def export(
    volume,
    model,
    path,
    *,
    planes: str = "fuse",
    factor: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunks: tuple[int, int] | None = None,
    **kwargs,
) -> Path:
    """Reconstruct and write to ``path`` (.tif/.tiff or .zarr/.ome.zarr), chunk by chunk, bounded memory.

    A zarr output carries a completion marker until it is finished, and an interrupted export resumes when run
    again; a TIFF is written under a temporary name and renamed when complete.
    """
    from .io import same_place, write_volume

    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists():
        if same_place(path, str(source)):
            raise InputError(f"{path} is the input volume ({source}): write the result elsewhere (nothing was written)")
    from .model import EMSRModel

    if isinstance(model, (str, Path)) and str(model) not in ("cubic", "linear"):
        model = EMSRModel.load(model)
    arr = reconstruct(volume, model, planes=planes, factor=factor, device=device,
                      chunks=chunks or _export_chunks(volume, planes), **kwargs)
    axis = kwargs.get("axis")
    sp = output_spacing(volume, getattr(model, "axis", 0) if axis is None else axis)
    # NOTE: output slice 0 coincides with input slice 0, so the output keeps the input's translation. The
    # fingerprint makes a resumed zarr export refuse another input, method, model or planes (no mixed volumes).
    fingerprint = export_fingerprint(volume, model, planes, factor, deband=kwargs.get("deband", True))
    write = functools.partial(write_volume, spacing=sp, unit=getattr(volume, "unit", "nm"), overwrite=overwrite,
                              progress=progress, translation=getattr(volume, "translation", None),
                              fingerprint=fingerprint)
    from .cluster import active_client

    client = active_client()
    if client is None:
        return write(path, arr)
    return _export_on_cluster(client, arr, Path(path).expanduser().absolute(), write)


def _engine_keys(arr) -> list:
    return [k for k in arr.__dask_graph__() if isinstance(k, str) and k.startswith("emsr-engine-")]


def _export_on_cluster(client, arr, path: Path, write) -> Path:
    """Write ``arr`` with its chunks computed on a ``distributed`` cluster.

    The engine (source array and model) is computed once and replicated to every worker for the whole export, so
    each worker deserialises it (and builds its network) once, not once per written block. A zarr output is
    written by the workers (the path must be visible to them). A TIFF is a memory map that exists only in this
    process (workers would write into copies of it: an all-zero file), so its chunks are computed on the cluster
    and fetched here, a few at a time, by a local thread pool that stores them into the map.
    """
    import dask
    from dask.delayed import Delayed

    # NOTE: the deband filters are fitted here, as they would be when the engine is pickled, so that an error of
    # the fit (NaN in its probe) is ours, not a failure to serialise reported by distributed
    debander_of(arr)
    graph = arr.__dask_graph__()
    engines = [client.persist(Delayed(k, graph)) for k in _engine_keys(arr)]
    try:
        if engines and not _amm_running(client):
            client.replicate(engines)
        # NOTE: low-level fusion would inline the engine into the task of a block that has one chunk, and the
        # model would then travel (and be deserialised) with that task instead of being read from the replica.
        with dask.config.set({"optimization.fuse.active": False}):
            if str(path).lower().endswith((".tif", ".tiff")):
                nthreads = max(1, sum(client.nthreads().values()))
                with dask.config.set(scheduler="threads", num_workers=nthreads):
                    return write(path, _fetched(client, arr))
            return write(path, arr)
    finally:
        del engines


def _amm_running(client) -> bool:
    """Whether the scheduler's active memory manager runs: distributed documents ``Client.replicate`` as incompatible
    with it (the AMM drops the replicas, replicate can wait forever). The clusters emsr starts run without it
    (:data:`napari_emsr.cluster.NO_AMM`); a user's own scheduler may not. Unknown counts as running; without the
    replica each worker fetches the engine with its first chunk, as a task dependency."""
    try:
        return bool(client.amm.running())
    except Exception:
        return True


def _fetched(client, arr):
    """A dask array for the local scheduler whose every chunk is ``arr``'s chunk computed on ``client``'s cluster."""
    import dask.array as da
    from dask.base import tokenize

    def fetch(block_info=None):
        loc = tuple(block_info[None]["chunk-location"])
        future = client.compute(arr.blocks[loc], optimize_graph=False)
        try:
            return future.result()
        finally:
            future.release()

    return da.map_blocks(fetch, name=f"emsr-fetch-{tokenize(arr.name)}", chunks=arr.chunks, dtype=arr.dtype,
                         meta=np.empty((0,) * arr.ndim, arr.dtype))


def debander_of(array: Any) -> Any:
    """The section-phase filters (:class:`napari_emsr.deband.Debander`) of a lazy reconstruction made by
    :func:`reconstruct` or a slice of one, fitted now if no chunk has fitted them yet; None for interpolation, for
    ``deband=False`` or for an array :func:`reconstruct` did not make."""
    layers = getattr(getattr(array, "dask", None), "layers", None) or {}
    for name, layer in layers.items():
        if str(name).startswith("emsr-engine-"):
            node = layer[name]
            eng = getattr(node, "value", node)  # a DataNode (dask >= 2025) or the object itself
            if isinstance(eng, _Engine):
                return eng.debander()
    return None


def export_fingerprint(volume, model, planes: str, factor: float | None = None,
                       deband: bool | None = None) -> dict[str, str]:
    """What produces an export's data, as strings stored with an unfinished zarr export: a resume with another
    input, method, model or planes is refused instead of mixing two results in one volume.

    The input is named by its source, shape, dtype, voxel size and a digest of three sampled planes (a central
    crop of at most 256 x 256 each), so another file of the same shape is told apart without reading it whole;
    and, for a local file or folder, by what :func:`input_stamp` says of it (size and modification time; a zarr
    store's listing), so that an input edited in place anywhere is not taken for the one the export was made from.
    """
    import hashlib

    data = volume.data
    n = int(data.shape[0])
    cy, cx = (min(256, int(s)) for s in data.shape[1:3])
    y0, x0 = (int(data.shape[1]) - cy) // 2, (int(data.shape[2]) - cx) // 2
    h = hashlib.sha256()
    for z in sorted({0, n // 2, n - 1}):
        h.update(np.ascontiguousarray(_compute(data[z, y0 : y0 + cy, x0 : x0 + cx])).tobytes())
    spacing = getattr(volume, "spacing", None)
    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists():  # the same file however it is named (relative, absolute, a link)
        source = str(Path(str(source)).resolve())
    fp = {
        "input": f"{source} {tuple(int(s) for s in data.shape)} {data.dtype} "
        f"{spacing} sample:{h.hexdigest()[:16]}",
        "planes": planes,
        "factor": "" if factor is None else f"{float(factor):g}",
    }
    stamp = input_stamp(source)
    if stamp:
        fp["input file"] = stamp
    if isinstance(model, str):
        fp["method"] = model
    else:
        fp["method"] = str(model.config.get("method"))
        fp["model"] = model.fingerprint()
        if deband is not None:
            fp["deband"] = "on" if deband else "off"
    return fp


def input_stamp(source) -> str:
    """Size and modification time of an input file, or of a folder's files (a zarr store: how many, their bytes,
    the latest modification and a digest of the listing of names, sizes and modification times, which holds the
    arrays' metadata files too); "" for no source or a URL (only the sampled planes of
    :func:`export_fingerprint` tell a remote store apart).

    Nothing is read but the listing (one ``stat`` per file): an edit anywhere in the input changes it.
    """
    import hashlib

    if not source or "://" in str(source):
        return ""
    p = Path(str(source))
    try:
        st = p.stat()
    except OSError:
        return ""
    if not p.is_dir():
        return f"{st.st_size} bytes, modified {_when(st.st_mtime_ns)}"
    h, files, size, latest = hashlib.sha256(), 0, 0, 0
    for name, fsize, mtime in sorted(_listing(p)):
        h.update(f"{name}\0{fsize}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        files, size, latest = files + 1, size + fsize, max(latest, mtime)
    return (f"{files} files, {size} bytes, last modified {_when(latest) if files else '-'}, "
            f"listing {h.hexdigest()[:16]}")


def _when(ns: int) -> str:
    """A modification time (ns since the epoch) as local date and time with its nanoseconds."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}"


def _listing(folder: Path):
    """(relative name, size, mtime ns) of every file under ``folder`` (links to folders are not followed)."""
    stack = [(folder, "")]
    while stack:
        d, prefix = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), prefix + e.name + "/"))
                else:
                    st = e.stat()  # a link to a chunk: the chunk's size and time
                    yield prefix + e.name, int(st.st_size), int(st.st_mtime_ns)
            except OSError:  # a broken link, a file removed meanwhile
                yield prefix + e.name, -1, 0


def _export_chunks(vol, planes: str, target: int = 8_000_000, margin: int = 32) -> tuple[int, int]:
    """Chunks for writing: about ``target`` output voxels each, long along the axis the network needs.

    xz (yz) planes: whole rows (columns) up to 1024 px, so the network's lateral margin costs nothing. Fused:
    square columns of at least ``2 * margin`` px (at most 1024): each direction then restores its chunk plus
    a margin on two sides only (1.5x the chunk for 128 px), where rows of a few px (a deep stack) would cost the
    yz direction ``(rows + 2 * margin) / rows`` times the chunk (10x for 7 rows). About ``2 * target`` voxels.
    """
    nz, ny, nx = vol.data.shape
    f = getattr(vol, "factor", None) or 1.0
    if not 1.0 <= f <= 64.0:  # NOTE: reconstruct() then refuses such a factor with its own clear message
        f = 1.0
    zo = max(1, int(nz * f))
    if planes == "fuse":
        side = min(1024, max(2 * margin, 16 * round(math.sqrt(2 * target / zo) / 16)))
        return min(ny, side), min(nx, side)
    if planes == "yz":
        cy = min(ny, 1024)
        cx = max(1, min(nx, target // max(1, zo * cy)))
    else:
        cx = min(nx, 1024)
        cy = max(1, min(ny, target // max(1, zo * cx)))
    return cy, cx


# ---------------------------------------------------------------------------------------------- uncertainty
def reconstruct_pair(volume, model, **kwargs):
    """The fused volume and its uncertainty as two lazy arrays that share their chunk tasks.

    Each chunk restores the xz and the yz planes through it once (as ``planes="fuse"`` does) and gives both
    their mean (the fused chunk, the same bits as :func:`reconstruct` with ``planes="fuse"``) and their absolute
    difference in the input's intensities, cast to its dtype: the *uncertainty*, 0 where the two directions
    agree, large where the network restores a structure differently depending on the direction it looks from
    (trust those places less).

    Parameters
    ----------
    volume, model
        As for :func:`reconstruct`; ``model`` must be a trained model (interpolation restores the same planes
        both ways).
    **kwargs
        ``factor``, ``axis``, ``device``, ``chunks``, ``tile``, ``overlap``, ``batch``, ``margin`` as for
        :func:`reconstruct` (default chunks: the fused ones).

    Returns
    -------
    (dask.array.Array, dask.array.Array)
        The fused volume and the uncertainty, (z, y, x) each, same chunks. ``stack.blocks[(0, *b)]`` of their
        common stacked array (``fused.dask`` holds it) computes block ``b`` of both at once.
    """
    _needs_a_model(model)
    stack = reconstruct(volume, model, planes=PAIR, **kwargs)
    return stack[0], stack[1]


def uncertainty(volume, model, **kwargs):
    """Where the xz and yz restorations disagree: ``|xz - yz|`` in input intensities, lazily (see
    :func:`reconstruct_pair`, whose second array this is)."""
    return reconstruct_pair(volume, model, **kwargs)[1]


def _needs_a_model(model) -> None:
    if isinstance(model, (str, Path)) and str(model) in ("cubic", "linear"):
        raise InputError(
            f"the uncertainty compares the xz and yz restorations of a trained model; {model} interpolation gives the "
            "same volume both ways: train a model first (emsr train), or leave the uncertainty out"
        )


def export_uncertainty(
    volume,
    model,
    path,
    *,
    factor: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunks: tuple[int, int] | None = None,
    **kwargs,
) -> Path:
    """Write the uncertainty of the fused reconstruction (:func:`uncertainty`) to ``path``, as :func:`export`
    writes a result: same grid, voxel size and translation as the fused volume, chunk by chunk, resumable.

    It restores both directions again (the cost of a fused export): write it beside a result when you want to
    see which structures to trust.
    """
    from .io import same_place, write_volume
    from .model import EMSRModel

    _needs_a_model(model)
    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists() and same_place(path, str(source)):
        raise InputError(f"{path} is the input volume ({source}): write the uncertainty elsewhere (nothing written)")
    if isinstance(model, (str, Path)):
        model = EMSRModel.load(model)
    arr = uncertainty(volume, model, factor=factor, device=device, chunks=chunks or _export_chunks(volume, "fuse"),
                      **kwargs)
    axis = kwargs.get("axis")
    sp = output_spacing(volume, model.axis if axis is None else axis)
    write = functools.partial(write_volume, spacing=sp, unit=getattr(volume, "unit", "nm"), overwrite=overwrite,
                              progress=progress, translation=getattr(volume, "translation", None),
                              fingerprint=export_fingerprint(volume, model, "uncertainty", factor))
    from .cluster import active_client

    client = active_client()
    if client is None:
        return write(path, arr)
    return _export_on_cluster(client, arr, Path(path).expanduser().absolute(), write)
