"""Lazy isotropic reconstruction: a dask array whose chunks run the network on batches of xz (or yz) planes.

``reconstruct(volume, model)`` computes nothing. Each output chunk is one ``map_blocks`` task that reads the
input rows it needs, interpolates them along z onto the output grid, restores every axial plane in it and returns
the chunk in the input dtype. The engine (source, model, options) is one key of the graph, so a
``dask.distributed`` cluster ships it to each worker once, and the built network is cached per device in each
process.

The engine each chunk runs (out-of-memory retries, NaN checks, thread counts, stopping) is
:class:`napari_emsr.engine.Engine`; what produces an export (its fingerprint) is
:func:`napari_emsr.outputs.export_fingerprint`.

Geometry (:mod:`napari_emsr.geometry`, a DESIGN.md contract): input slice ``i`` lies at output z = ``i * F``;
output spacing equals the lateral spacing.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .engine import MIN_TILE, PAIR, Engine, Stopped
from .errors import InputError, ModelError
from .geometry import (
    check_axis,
    coarse_axis,
    factor_from_spacing,
    from_front,
    front_order,
    output_length,
    resolve_factor,
    spacing_text,
    to_front,
)
from .geometry import output_spacing as grid_spacing
from .methods import get_method
from .outputs import export_fingerprint

__all__ = ["MIN_TILE", "PAIR", "PLANES", "Stopped", "debander_of", "export", "export_chunks", "export_fingerprint",
           "export_uncertainty", "output_spacing", "reconstruct", "reconstruct_pair", "uncertainty"]

PLANES = ("xz", "yz", "fuse")


def output_spacing(volume, axis: int = 0) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) of the isotropic output of ``volume``: the lateral spacing on every axis."""
    return grid_spacing(getattr(volume, "spacing", None), axis)


def as_model(model: Any) -> Any:
    """``model`` ready to apply: a path loaded as an :class:`~napari_emsr.model.EMSRModel`; the name of a method
    that needs no model (interpolation) kept as it is; a model as it is."""
    from .methods import METHODS

    if not isinstance(model, (str, Path)):
        return model
    meth = METHODS.get(str(model))
    if meth is not None and not meth.trains:
        return str(model)
    from .model import EMSRModel

    return EMSRModel.load(model)


def _chunk(engine: Engine, block_info=None) -> np.ndarray:
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
    stop: Callable[[], bool] | None = None,
    compiled: bool = False,
    debander: Any = None,
    consistent: bool = False,
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
    stop : callable, optional
        Called before each chunk and each batch of planes; a true answer stops with
        :class:`napari_emsr.engine.Stopped` (it may raise its own exception instead).
    compiled : bool
        Run the network through ``torch.compile`` (:meth:`napari_emsr.model.EMSRModel.network`).
    debander : napari_emsr.deband.Debander, optional
        Deband filters already fitted for this volume, model and planes (:func:`debander_of` of another
        reconstruction of them): used instead of fitting them again.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    from .geometry import check_factor
    from .io import as_volume, finite_check
    from .methods import METHODS
    from .model import TILE, TILE_OVERLAP, EMSRModel

    if planes not in PLANES and planes != PAIR:
        raise InputError(f"planes must be one of {', '.join(PLANES)}, got {planes!r}")
    vol = volume if hasattr(volume, "spacing") and hasattr(volume, "data") else as_volume(volume)
    if factor is not None:
        factor = check_factor(factor)
    # NOTE: a sample of planes is read (float data only): NaN or inf would come out as NaN, or as zeros once cast.
    finite_check(vol.data)
    model = as_model(model)
    if isinstance(model, EMSRModel):
        model.validate()
        app = getattr(METHODS.get(str(model.config.get("method"))), "application", None)
        if app is not None and app.lateral:  # a model that makes xy planes finer, not z
            raise InputError(f"this model super-resolves xy planes (method {model.config.get('method')}): apply it "
                             "with `emsr apply` or its method's application (napari_emsr.methods.application_of), "
                             "not as an isotropic reconstruction")
        ax = model.axis if axis is None else check_axis(axis)
        coarse = coarse_axis(vol.spacing) if factor is None and axis is None else None
        along = factor_from_spacing(vol.spacing, ax) if coarse is not None else None
        if coarse is not None and coarse != ax and abs(along - model.factor) > 0.05 * model.factor:
            # NOTE: a model of another axis: the factor along its axis (about 1, or below) is not what is wrong
            raise ModelError(
                f"this model was trained for anisotropic axis {ax} (F = {model.factor:g}); this volume's coarse "
                f"axis is axis {coarse} ({spacing_text(vol.spacing)}): train a model on it (emsr train, which takes "
                f"--axis {coarse}), or apply this model to a volume cut along axis {ax} (if the file's voxel size is "
                "wrong, --factor overrides it)"
            )
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
    eng = Engine(src, net_model, f, order, planes, device, int(tile or TILE),
                  int(TILE_OVERLAP if overlap is None else overlap), int(batch or 0), int(margin), out_dtype,
                  deband=deband, name=getattr(vol, "source", None), axis=ax, stop=stop, compiled=compiled,
                  consistent=consistent)
    if debander is not None and eng.deband:
        eng._debander = debander
    token = tokenize(id(eng), str(src.name) if hasattr(src, "name") else id(src), f, order, planes, chunks,
                     eng.deband, eng.consistent)
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
    stop: Callable[[], bool] | None = None,
    **kwargs,
) -> Path:
    """Reconstruct and write to ``path`` (.tif/.tiff or .zarr/.ome.zarr), chunk by chunk, bounded memory.

    A zarr output carries a completion marker until it is finished, and an interrupted export resumes when run
    again; a TIFF is written under a temporary name and renamed when complete. ``stop()`` is checked before each
    block and each batch of planes (see :func:`reconstruct`); on a cluster it is checked between the blocks this
    process writes only.
    """
    from .io import same_place, write_volume

    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists():
        if same_place(path, str(source)):
            raise InputError(f"{path} is the input volume ({source}): write the result elsewhere (nothing was written)")
    model = as_model(model)
    spill = kwargs.pop("spill", None)
    chunks = chunks or export_chunks(volume, planes)
    if spill is not None and planes == "fuse" and not isinstance(model, str):
        # NOTE: the fused chunks computed with their uncertainty (the same bits), which each chunk task leaves in
        # `spill` for export_uncertainty(spilled=...): the uncertainty costs no second restoration.
        stack = reconstruct(volume, model, planes=PAIR, factor=factor, device=device, chunks=chunks, stop=stop,
                            **kwargs)
        arr = stack.map_blocks(_keep_uncertainty, Path(spill), drop_axis=0, dtype=stack.dtype,
                               chunks=stack.chunks[1:], name=f"emsr-spilling-{stack.name}")
    else:
        arr = reconstruct(volume, model, planes=planes, factor=factor, device=device, chunks=chunks, stop=stop,
                          **kwargs)
    axis = kwargs.get("axis")
    sp = output_spacing(volume, getattr(model, "axis", 0) if axis is None else axis)
    # NOTE: output slice 0 coincides with input slice 0, so the output keeps the input's translation. The
    # fingerprint makes a resumed zarr export refuse another input, method, model or planes (no mixed volumes).
    fingerprint = export_fingerprint(volume, model, planes, factor, deband=kwargs.get("deband", True),
                                     consistent=kwargs.get("consistent", False))
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
            if isinstance(eng, Engine):
                return eng.debander()
    return None


#: Output voxels of a fused chunk above which its side shrinks below eight margins (memory per chunk).
MAX_FUSED_VOXELS = 64_000_000


def export_chunks(vol, planes: str, target: int = 8_000_000, margin: int = 32) -> tuple[int, int]:
    """Chunks for writing: about ``target`` output voxels each, long along the axis the network needs.

    xz (yz) planes: whole rows (columns) up to 1024 px, so the network's lateral margin costs nothing. Fused:
    square columns (at most 1024 px): each direction restores its chunk plus a margin on two sides only, so a
    side of at least ``8 * margin`` keeps the margins' extra work within 25 % (``(side + 2 * margin) / side``),
    where rows of a few px (a deep stack) would cost the yz direction ``(rows + 2 * margin) / rows`` times the
    chunk (10x for 7 rows). A chunk of a very deep output keeps to :data:`MAX_FUSED_VOXELS` (memory) and then
    pays more margin, never below ``2 * margin`` px.
    """
    nz, ny, nx = vol.data.shape
    f = getattr(vol, "factor", None) or 1.0
    if not 1.0 <= f <= 64.0:  # NOTE: reconstruct() then refuses such a factor with its own clear message
        f = 1.0
    zo = max(1, int(nz * f))
    if planes == "fuse":
        side = min(1024, max(8 * margin, 16 * round(math.sqrt(2 * target / zo) / 16)))
        if zo * side * side > MAX_FUSED_VOXELS:
            side = max(2 * margin, 16 * int(math.sqrt(MAX_FUSED_VOXELS / zo) / 16))
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
    from .methods import METHODS

    meth = METHODS.get(str(model)) if isinstance(model, (str, Path)) else None
    if meth is not None and not meth.trains:
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

    It restores both directions again (the cost of a fused export), unless ``spilled`` names the folder where
    :func:`export` with ``spill=`` left the uncertainty of the chunks it computed: those are read back, the
    others (an export that was resumed) restored.
    """
    from .io import same_place, write_volume

    _needs_a_model(model)
    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists() and same_place(path, str(source)):
        raise InputError(f"{path} is the input volume ({source}): write the uncertainty elsewhere (nothing written)")
    model = as_model(model)
    spilled = kwargs.pop("spilled", None)
    arr = uncertainty(volume, model, factor=factor, device=device, chunks=chunks or export_chunks(volume, "fuse"),
                      **kwargs)
    if spilled is not None:
        arr = da_from_spill(arr, Path(spilled))
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


def _spill_name(loc) -> str:
    return "_".join(str(int(i)) for i in loc[-3:]) + ".npy"


def _keep_uncertainty(block: np.ndarray, spill: Path, block_info=None) -> np.ndarray:
    """One stacked (fused, uncertainty) chunk: the uncertainty saved in ``spill``, the fused part returned."""
    name = _spill_name(block_info[0]["chunk-location"])
    tmp = spill / f".{name}.part.npy"
    np.save(tmp, np.ascontiguousarray(block[1]))
    os.replace(tmp, spill / name)  # whole or absent
    return block[0]


def da_from_spill(arr, spill: Path):
    """The lazy uncertainty ``arr`` whose chunks are read from ``spill`` where :func:`export` left them (else
    computed)."""
    import dask.array as da

    def chunk(block_info=None):
        info = block_info[None]
        path = spill / _spill_name(info["chunk-location"])
        if path.exists():
            return np.load(path)
        return np.asarray(arr.blocks[tuple(info["chunk-location"])].compute(scheduler="synchronous"))

    return da.map_blocks(chunk, chunks=arr.chunks, dtype=arr.dtype, name=f"emsr-spilled-{arr.name}",
                         meta=np.empty((0,) * arr.ndim, arr.dtype))
