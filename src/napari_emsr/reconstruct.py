"""Lazy isotropic reconstruction: a dask array whose chunks run the network on batches of xz (or yz) planes.

``reconstruct(volume, model)`` computes nothing. Each output chunk is one task that reads the input rows it
needs (with a margin for the network's context), interpolates them along z onto the output grid, restores
every axial plane in it (tiled with overlap and smooth blending when a plane is larger than a tile) and
returns the chunk in the input dtype. The model is one key of the graph, so a ``dask.distributed`` cluster
ships it to each worker once, and the built network is cached per device in each process.

Geometry (DESIGN.md, contract): input slice ``i`` lies at output z = ``i * F``; output spacing equals the
lateral spacing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from .degrade import interpolate_axis
from .geometry import check_factor, output_length, output_positions
from .errors import InputError
from .methods import get_method

log = logging.getLogger(__name__)

PLANES = ("xz", "yz", "fuse")


def output_spacing(volume, factor: float | None = None) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) of the isotropic output: the lateral spacing on every axis."""
    sp = getattr(volume, "spacing", None)
    if sp is None:
        return None
    return (float(sp[2]), float(sp[1]), float(sp[2]))


def _compute(a):
    return a.compute(scheduler="synchronous") if hasattr(a, "compute") else np.asarray(a)


class _Engine:
    """What every chunk task needs: the source array, the model and the tiling parameters (one graph key)."""

    def __init__(self, source, model, factor, order, planes, device, tile, overlap, batch, margin, out_dtype):
        self.source = source
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
        self._lock = threading.Lock()
        self._resolved = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_lock")
        d["_resolved"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ net
    def _device(self) -> str:
        with self._lock:
            if self._resolved is None:
                from .device import resolve_device

                self._resolved = resolve_device(self.device)
            return self._resolved

    def restore(self, planes: np.ndarray) -> np.ndarray:
        """Run the network on (N, H, W) normalised float32 planes; tiles and batches as needed."""
        import torch

        dev = self._device()
        net = self.model.network(dev)
        n, h, w = planes.shape
        t, ov = self.tile, self.overlap
        out = np.empty_like(planes)
        if h <= t and w <= t:
            tiles = [(0, h, 0, w)]
        else:
            tiles = [(y0, min(y0 + t, h), x0, min(x0 + t, w)) for y0 in _starts(h, t, ov) for x0 in _starts(w, t, ov)]
        acc = np.zeros((n, h, w), np.float32) if len(tiles) > 1 else None
        wsum = np.zeros((h, w), np.float32) if len(tiles) > 1 else None
        cuda = dev.startswith("cuda")
        bs = self.batch or (32 if cuda else 8)
        for y0, y1, x0, x1 in tiles:
            ws = _blend_window(y1 - y0, x1 - x0, ov, y0 == 0, y1 == h, x0 == 0, x1 == w) if acc is not None else None
            for b0 in range(0, n, bs):
                x = torch.from_numpy(np.ascontiguousarray(planes[b0 : b0 + bs, y0:y1, x0:x1]))[:, None]
                y = _run_net(net, x, dev, cuda)
                if acc is None:
                    out[b0 : b0 + bs] = y
                else:
                    acc[b0 : b0 + bs, y0:y1, x0:x1] += y * ws
            if wsum is not None:
                wsum[y0:y1, x0:x1] += ws
        if acc is not None:
            out = acc / wsum
        return out

    # ----------------------------------------------------------------- block
    def block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The output chunk (Z_out, y1 - y0, x1 - x0)."""
        src = self.source
        nz, ny, nx = src.shape
        if self.model is None:
            a = np.asarray(_compute(src[:, y0:y1, x0:x1]), np.float32)
            return self._cast(interpolate_axis(a, output_positions(nz, self.factor), self.order, axis=0))
        m = self.margin
        results = []
        if self.planes in ("xz", "fuse"):
            ex0, ex1 = max(0, x0 - m), min(nx, x1 + m)
            a = self._interp(src[:, y0:y1, ex0:ex1])  # (Z, yc, xc)
            r = self.restore(np.ascontiguousarray(a.transpose(1, 0, 2)))  # planes along y: (yc, Z, xc)
            results.append(r.transpose(1, 0, 2)[:, :, x0 - ex0 : x0 - ex0 + (x1 - x0)])
        if self.planes in ("yz", "fuse"):
            ey0, ey1 = max(0, y0 - m), min(ny, y1 + m)
            a = self._interp(src[:, ey0:ey1, x0:x1])  # (Z, yc, xc)
            r = self.restore(np.ascontiguousarray(a.transpose(2, 0, 1)))  # planes along x: (xc, Z, yc)
            results.append(r.transpose(1, 2, 0)[:, y0 - ey0 : y0 - ey0 + (y1 - y0), :])
        out = results[0] if len(results) == 1 else 0.5 * (results[0] + results[1])
        lo, hi = self.model.config["norm"]
        return self._cast(out * (hi - lo) + lo)

    def _interp(self, region) -> np.ndarray:
        lo, hi = self.model.config["norm"]
        a = (np.asarray(_compute(region), np.float32) - lo) / (hi - lo)
        return interpolate_axis(a, output_positions(a.shape[0], self.factor), self.order, axis=0)

    def _cast(self, a: np.ndarray) -> np.ndarray:
        dt = self.out_dtype
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(a), info.min, info.max).astype(dt)
        return a.astype(dt)


def _run_net(net, x, dev, cuda):
    import torch

    x = x.to(dev)
    with torch.inference_mode():
        if cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = net(x.contiguous(memory_format=torch.channels_last))
        else:
            y = net(x)
    return y.float()[:, 0].cpu().numpy()


def _starts(n: int, t: int, ov: int) -> list[int]:
    if n <= t:
        return [0]
    step = t - ov
    s = list(range(0, n - t, step))
    s.append(n - t)
    return s


def _blend_window(h: int, w: int, ov: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    """Smooth (raised-cosine) weights falling to ~0 over ``ov`` pixels at inner tile edges."""

    def ramp(n, lo_edge, hi_edge):
        r = np.ones(n, np.float32)
        k = min(ov, n // 2)
        if k > 0:
            up = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
            if not lo_edge:
                r[:k] = up
            if not hi_edge:
                r[n - k :] = up[::-1]
        return r

    return np.outer(ramp(h, top, bottom), ramp(w, left, right)).astype(np.float32) + 1e-6


def reconstruct(
    volume,
    model="cubic",
    *,
    planes: str = "xz",
    factor: float | None = None,
    axis: int | None = None,
    device: str = "auto",
    chunks: tuple[int, int] | None = None,
    tile: int = 512,
    overlap: int = 32,
    batch: int | None = None,
    margin: int = 32,
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
    tile, overlap, batch : int
        Planes larger than ``tile`` are restored in overlapping tiles, blended smoothly; ``batch`` planes per
        network call (default 8 on a CPU, 32 on a GPU, where batch 8 leaves it idle).
    margin : int
        Extra lateral context (px) read around a chunk for the network.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from .io import as_volume
    from .model import EMSRModel

    if planes not in PLANES:
        raise InputError(f"planes must be one of {', '.join(PLANES)}, got {planes!r}")
    vol = volume if hasattr(volume, "spacing") and hasattr(volume, "data") else as_volume(volume)
    if isinstance(model, (str, Path)) and str(model) not in ("cubic", "linear"):
        model = EMSRModel.load(model)
    if isinstance(model, EMSRModel):
        ax = model.axis if axis is None else axis
        f = factor if factor is not None else _volume_factor(vol, ax)
        model.check_compatible(f, ax)
        f = model.factor
        order = int(model.config.get("order", 3))
        net_model = model
    else:
        meth = get_method(str(model))
        if meth.trains:
            raise InputError(f"method {meth.name!r} needs a trained model: train one first (emsr train)")
        ax = 0 if axis is None else axis
        f = factor if factor is not None else _volume_factor(vol, ax)
        if f is None:
            raise InputError("the volume has no voxel size, so the anisotropy factor is unknown: pass --factor F")
        order = meth.order
        net_model = None
    f = check_factor(f)
    src = vol.data
    if ax != 0:
        src = src.transpose([ax] + [a for a in range(3) if a != ax])
    nz, ny, nx = src.shape
    zo = output_length(nz, f)
    if chunks is None:
        if planes == "yz":
            chunks = (min(ny, 1024), 1)
        elif planes == "fuse":
            # NOTE: a fused chunk restores every yz plane crossing it over its rows plus 2 x margin: with one-row
            # chunks that is 65x the work of the chunk itself (emsr demo took > 12 min instead of ~1); 64 rows
            # bring it to 3x (xz rows + yz rows with margins), and the next 63 planes come free.
            chunks = (min(ny, 64), min(nx, 1024))
        else:
            chunks = (1, min(nx, 1024))
    cy, cx = max(1, int(chunks[0])), max(1, int(chunks[1]))
    ych = _split(ny, cy)
    xch = _split(nx, cx)
    out_dtype = src.dtype
    eng = _Engine(src, net_model, f, order, planes, device, int(tile), int(overlap), int(batch or 0), int(margin), out_dtype)
    token = tokenize(id(eng), str(src.name) if hasattr(src, "name") else id(src), f, order, planes, chunks)
    name = f"emsr-reconstruct-{token}"
    ekey = f"emsr-engine-{token}"
    dsk = {ekey: eng}
    yoff = np.concatenate([[0], np.cumsum(ych)])
    xoff = np.concatenate([[0], np.cumsum(xch)])
    for i in range(len(ych)):
        for j in range(len(xch)):
            dsk[(name, 0, i, j)] = (_Engine.block, ekey, int(yoff[i]), int(yoff[i + 1]), int(xoff[j]), int(xoff[j + 1]))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    arr = da.Array(graph, name, chunks=((zo,), tuple(ych), tuple(xch)), dtype=out_dtype)
    if ax != 0:
        inv = np.argsort([ax] + [a for a in range(3) if a != ax])
        arr = arr.transpose(list(inv))
    return arr


def _volume_factor(vol, axis: int) -> float | None:
    sp = getattr(vol, "spacing", None)
    if sp is None:
        return None
    lat = [s for a, s in enumerate(sp) if a != axis]
    return float(sp[axis]) / float(lat[-1])


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
    from .io import write_volume

    vol = volume
    arr = reconstruct(vol, model, planes=planes, factor=factor, device=device, chunks=chunks or _export_chunks(vol, planes), **kwargs)
    sp = output_spacing(vol)
    return write_volume(path, arr, sp, getattr(vol, "unit", "nm"), overwrite=overwrite, progress=progress)


def _export_chunks(vol, planes: str, target: int = 8_000_000) -> tuple[int, int]:
    """Chunks for writing: about ``target`` output voxels each, long along the axis the network needs."""
    nz, ny, nx = vol.data.shape
    f = getattr(vol, "factor", None) or 1.0
    zo = max(1, int(nz * f))
    if planes == "yz":
        cy = min(ny, 1024)
        cx = max(1, min(nx, target // max(1, zo * cy)))
    else:
        cx = min(nx, 1024)
        cy = max(1, min(ny, target // max(1, zo * cx)))
    return cy, cx
