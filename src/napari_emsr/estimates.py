"""How long an export takes here, from one timed chunk of the very pipeline it computes.

An export's time is not a network's speed times a count of pixels: the same export also reads the stack,
interpolates it onto the output grid, restores the planes of each chunk *with their context margins* (twice for a
fused export, once per direction), fits the section-phase (deband) filters once on a probe region and filters
every chunk with them, and casts the result. :func:`estimate_export` therefore builds the lazy reconstruction the
export computes (:func:`napari_emsr.reconstruct.reconstruct` with the export's planes, deband setting and chunks,
:func:`napari_emsr.reconstruct.export_chunks`), and times it:

1. the one-off costs, once: the deband filters' fit (:func:`napari_emsr.reconstruct.debander_of`, which also
   builds the network and runs it a first time); for interpolation nothing;
2. one representative interior chunk (without a deband fit, the network's first call is paid on a corner chunk
   first, and what that took beyond the corner's share of the work is added to the one-off costs);
3. the whole export = one-off costs + the chunk's time scaled by the export's work in chunks of the timed one.

The work of a chunk (:func:`chunk_work`) is what its planes cost the network: each restored direction's planes
over the chunk's extent plus the context margin on each side that lies inside the volume (an edge chunk costs
less per voxel than an interior one); interpolation costs its output voxels. The chunk grid is read from the lazy
array itself, never assumed. When the export's chunks are so large that one of them is a large share of the
whole (a small stack in one or a few chunks), the timed chunk comes from the same pipeline with its chunks
halved until it is a small share (:data:`SHARE`), and the work scaling carries it to the export's chunks.

Writing is not timed (compressing and storing a chunk costs little beside restoring it). Nothing here imports
Qt or napari: the panel (:mod:`napari_emsr.plugin.estimate`) and the command line (``emsr apply``, ``emsr
reconstruct``) use the same function. ``benchmarks/bench_estimates.py`` measures it against real exports.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The timed chunk is at most this share of the export's work (smaller chunks are timed when one export chunk is
#: a larger share), so that the estimate costs a small part of the export.
SHARE = 1 / 16
#: And at most this much work (network pixels, or output voxels for interpolation): an export's chunk of a large
#: volume can take minutes on a CPU, a part of it says as much.
MAX_WORK = 4_000_000

Span = tuple[int, int]


@dataclass(frozen=True)
class ExportEstimate:
    """What an export should take here, and how that was found.

    Attributes
    ----------
    seconds : float
        The whole export: ``once + chunk_seconds * scale``.
    once : float
        Costs paid once per export (the deband probe's fit, building the network, the first call of a shape).
    chunk_seconds : float
        The timed chunk's steady time.
    scale : float
        The export's work in timed chunks.
    chunks : int
        The chunks the export writes.
    chunk_shape : tuple of int
        The timed chunk's shape (z, y, x in the output's axis order).
    how : str
        One line for people: what was timed.
    debander : napari_emsr.deband.Debander or None
        The deband filters fitted for the estimate: the export may take them instead of fitting them again
        (``reconstruct(..., debander=...)``).
    """

    seconds: float
    once: float
    chunk_seconds: float
    scale: float
    chunks: int
    chunk_shape: tuple[int, ...]
    how: str
    debander: Any = None


def default_margin() -> int:
    """The context margin (px) :func:`napari_emsr.reconstruct.reconstruct` reads around a chunk by default."""
    from .reconstruct import reconstruct

    return int(inspect.signature(reconstruct).parameters["margin"].default)


def spans(chunks: Sequence[int]) -> list[Span]:
    """(start, stop) of each chunk along one axis, from a dask array's chunk sizes along it."""
    edges = np.cumsum((0, *(int(c) for c in chunks)))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def chunk_work(zo: int, ny: int, nx: int, planes: str, y: Span, x: Span, margin: int,
               extend: tuple[int, int] = (0, 0)) -> int:
    """The work of one output chunk (rows ``y``, columns ``x``, all ``zo`` output planes), in network pixels.

    xz planes: each of the chunk's rows restores the output's z extent by its columns plus ``margin`` each side
    (inside the volume); yz planes: each column by its rows plus margins; fused (``"fuse"``, ``"pair"``): both.
    ``extend`` (rows, columns): px of its neighbours the chunk restores too, each side (the deband filters'
    radius along the axes they filter). ``planes=None``: no network (interpolation): the chunk's output voxels.
    """
    (y0, y1), (x0, x1) = y, x
    y0, y1 = max(0, y0 - extend[0]), min(ny, y1 + extend[0])
    x0, x1 = max(0, x0 - extend[1]), min(nx, x1 + extend[1])
    if planes is None:
        return int(zo * (y1 - y0) * (x1 - x0))
    work = 0
    if planes in ("xz", "fuse", "pair"):
        work += (y1 - y0) * zo * (min(nx, x1 + margin) - max(0, x0 - margin))
    if planes in ("yz", "fuse", "pair"):
        work += (x1 - x0) * zo * (min(ny, y1 + margin) - max(0, y0 - margin))
    return int(work)


def grid_work(zo: int, ny: int, nx: int, planes: str | None, rows: Sequence[Span], cols: Sequence[Span],
              margin: int, extend: tuple[int, int] = (0, 0)) -> np.ndarray:
    """:func:`chunk_work` of every chunk of a grid, (len(rows), len(cols))."""
    return np.array([[chunk_work(zo, ny, nx, planes, y, x, margin, extend) for x in cols] for y in rows],
                    dtype=np.float64)


def front_chunks(arr: Any, axis: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The chunk sizes of a lazy reconstruction along (anisotropic, lateral 1, lateral 2) (the engine's frame)."""
    from .geometry import front_order

    chunks = arr.chunks[-3:]  # a stacked pair's first axis is not a spatial one
    return tuple(tuple(int(c) for c in chunks[i]) for i in front_order(axis))  # type: ignore[return-value]


def _interior(work: np.ndarray) -> tuple[int, int]:
    """The chunk of the most work, the one nearest the grid's centre among those (an interior chunk)."""
    best = np.argwhere(work >= work.max() * (1 - 1e-9))
    centre = (np.array(work.shape) - 1) / 2.0
    i, j = best[np.argmin(((best - centre) ** 2).sum(axis=1))]
    return int(i), int(j)


def probe_chunks(shape: tuple[int, int, int], chunks: tuple[int, int], planes: str | None, margin: int,
                 share: float = SHARE, max_work: float = MAX_WORK) -> tuple[int, int]:
    """The chunks the timed chunk comes from: the export's own, halved until an interior chunk is at most
    ``share`` of the whole export's work and at most ``max_work``.

    The side halved first is the one whose halving leaves the work per voxel as it is (rows of xz planes, columns
    of yz planes: their margins lie along the other side), else the longer one; a side that carries margins is
    never halved below ``margin`` px (a chunk of a few px is mostly margins: timing it says little of a large one).
    """
    zo, ny, nx = (int(s) for s in shape)
    size = [max(1, int(chunks[0])), max(1, int(chunks[1]))]
    total = grid_work(zo, ny, nx, planes, spans(_split(ny, size[0])), spans(_split(nx, size[1])), margin).sum()
    free = {"xz": 0, "yz": 1}.get(str(planes)) if planes is not None else None
    while True:
        work = grid_work(zo, ny, nx, planes, spans(_split(ny, size[0])), spans(_split(nx, size[1])), margin)
        if work.max() <= min(share * total, max_work):
            return size[0], size[1]
        order = [free, 1 - free] if free is not None else ([0, 1] if size[0] >= size[1] else [1, 0])
        for side in order:
            floor = 1 if planes is None or side == free else max(1, margin)
            if size[side] // 2 >= floor:
                size[side] //= 2
                break
        else:
            return size[0], size[1]


def _split(n: int, c: int) -> list[int]:
    c = max(1, int(c))
    return [min(c, n - s) for s in range(0, n, c)]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def estimate_export(volume: Any, model: Any, *, planes: str = "fuse", factor: float | None = None,
                    axis: int | None = None, device: str = "auto", deband: bool = True,
                    chunks: tuple[int, int] | None = None, share: float = SHARE, max_work: float = MAX_WORK,
                    **kwargs: Any) -> ExportEstimate:
    """Seconds :func:`napari_emsr.reconstruct.export` of these arguments should take here, from a timed chunk.

    Parameters
    ----------
    volume, model, planes, factor, axis, device, deband
        As for :func:`napari_emsr.reconstruct.export` (``model`` a trained model, its file, or an interpolation
        method's name).
    chunks : (int, int), optional
        The export's chunks (default: :func:`napari_emsr.reconstruct.export_chunks`, as the export picks them).
    share, max_work : float
        The largest share of the export's work, and the most work, the timed chunk may be (:func:`probe_chunks`).
    **kwargs
        ``tile``, ``overlap``, ``batch``, ``margin``: as for :func:`napari_emsr.reconstruct.reconstruct`.

    Returns
    -------
    ExportEstimate
    """
    from .reconstruct import as_model, debander_of, export_chunks, reconstruct

    model = as_model(model)
    network = not isinstance(model, str)
    margin = int(kwargs.get("margin", default_margin()))
    options = dict(planes=planes, factor=factor, axis=axis, device=device, deband=deband, **kwargs)
    # NOTE: the export's own lazy array: its chunk grid (whatever export_chunks and reconstruct make of it) is the
    # work the export does; nothing of it is computed.
    arr = reconstruct(volume, model, chunks=chunks or export_chunks(volume, planes), **options)
    ax = int(getattr(model, "axis", 0) if axis is None else axis) if network else int(axis or 0)
    zc, yc, xc = front_chunks(arr, ax)
    zo, ny, nx = sum(zc), sum(yc), sum(xc)
    kind = planes if network else None
    count = int(np.prod(arr.numblocks[-3:]))
    pcy, pcx = probe_chunks((zo, ny, nx), (max(yc), max(xc)), kind, margin, share, max_work)
    # NOTE: reconstruct's chunks are along the lateral axes in the engine's frame, as front_chunks reads them
    probe = arr if (pcy, pcx) == (max(yc), max(xc)) else reconstruct(volume, model, chunks=(pcy, pcx), **options)
    _, py, px = front_chunks(probe, ax)
    once = _timed(lambda: debander_of(probe)) if network else 0.0
    deb = debander_of(probe) if network else None
    fitted = deb is not None
    # NOTE: a chunk with active deband filters restores `radius` px of its neighbours along the axes they filter
    # (1: y, 2: x) as well: a small chunk pays more for it than a large one or one at the volume's edge.
    extend = tuple(int(deb.radius) if deb is not None and deb.active and a in deb.filters else 0 for a in (1, 2))
    total = float(grid_work(zo, ny, nx, kind, spans(yc), spans(xc), margin, extend).sum())
    pwork = grid_work(zo, ny, nx, kind, spans(py), spans(px), margin, extend)
    i, j = _interior(pwork)
    block = _block_index(probe, ax, i, j)
    first = None
    if network and not fitted:
        # NOTE: nothing was fitted, so nothing has run the network yet: its first call (building it, the CPU
        # library's kernels) is timed on the grid's corner chunk, and what it took beyond its share of the work
        # is paid once, not per chunk.
        first = (pwork[0, 0], _timed(lambda: probe.blocks[_block_index(probe, ax, 0, 0)].compute(
            scheduler="synchronous")))
    steady = _timed(lambda: probe.blocks[block].compute(scheduler="synchronous"))
    if first is not None:
        once += max(0.0, first[1] - steady * first[0] / max(float(pwork[i, j]), 1.0))
    scale = total / max(float(pwork[i, j]), 1.0)
    shape = tuple(int(s) for s in probe.blocks[block].shape[-3:])
    what = ("a fused chunk" if planes in ("fuse", "pair") else f"a chunk of {planes} planes") if network \
        else f"a chunk of {model} interpolation"
    how = (f"{what} of {' x '.join(str(s) for s in shape)} voxels timed here ({steady:.2g} s; the export is "
           f"{scale:.3g} such chunks of work in {count} chunk{'s' if count != 1 else ''}) plus {once:.2g} s paid "
           "once" + (" (the deband probe's fit)" if fitted else " (the network's first call)" if network else ""))
    return ExportEstimate(once + steady * scale, once, steady, scale, count, shape, how, deb)


def _block_index(arr: Any, axis: int, i: int, j: int) -> tuple[int, ...]:
    """The block index of ``arr`` whose lateral chunk indices in the engine's frame are (i, j)."""
    from .geometry import front_order

    front = [0, i, j]
    index = [0, 0, 0]
    for pos, dim in enumerate(front_order(axis)):
        index[dim] = front[pos]
    return tuple([0] * (arr.ndim - 3) + index)


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    s = int(round(max(0.0, float(seconds))))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def estimate_line(volume: Any, model: Any, *, device: str = "auto", above: float = 60.0, **options: Any) -> str | None:
    """The line a front end prints before an export: ``"estimated time: ~M:SS from one timed chunk"`` when
    :func:`estimate_export` of these arguments is above ``above`` seconds, else None.

    ``options``: the export's (``planes``, ``factor``, ``axis``, ``deband``, ...), as :func:`estimate_export`
    takes them.
    """
    return said(estimate_export(volume, model, device=device, **options), above)


def said(found: ExportEstimate, above: float = 60.0) -> str | None:
    """:func:`estimate_line`'s line for an estimate already made."""
    if found.seconds <= above:
        return None
    return f"estimated time: ~{clock(found.seconds)} from one timed chunk"
