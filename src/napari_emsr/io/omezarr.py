"""OME-Zarr and plain zarr: resumable block-wise export with a pyramid (reading is :mod:`.zarr_read`, the
resume marker and the checks before a store is resumed or replaced :mod:`.zarr_resume`; their names are
re-exported here).

Writing makes an NGFF 0.4 image on zarr format 2 (Blosc-zstd), or with ``ngff="0.5"`` an NGFF 0.5 image on
zarr format 3 whose arrays are sharded: level ``"0"`` computed block by block from the lazy input, then 2x
mean-downsampled levels ``"1"``, ``"2"`` ... read back chunk by chunk from the level before
(:mod:`napari_emsr.io.pyramid`). The :data:`INCOMPLETE_MARKER` file exists from before the first byte of the
store until the last level is written; it lists the finished level-0 blocks and pyramid levels, so that
writing the same volume again resumes where it stopped.

Sharding (NGFF 0.5) keeps the chunks a reader fetches and packs many of them into one file, a *shard*
(:func:`shard_shape`): one chunk thick along the axis the blocks walk, as many chunks across as fit in
:data:`SHARD_BYTES`. A shard is only ever written whole, by one task: the data is rechunked to shards before
it is stored, and a block is a row of shards, so no two writers share a shard and no shard is read back and
modified. zarr writes a file under a temporary name and renames it into place, and a resumed export deletes the
shards of the blocks it writes again before writing them, so a shard torn by a crash is never read.

One writer at a time: a write holds :func:`napari_emsr.io.safety.output_lock` on the store from its first
check to its last byte (a resume and the removal of a store being overwritten included), so a second process
writing the same store is refused at once, naming the first, and a finished store never mixes two writers'
data. An output path that is a symbolic link is refused (its target is never written into nor deleted), and a
folder is overwritten only when it is a zarr store through and through: some array in it, and nothing but
zarr metadata and chunks (:func:`store_stranger`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError
from . import ngff
from .blocks import block_axis, region, step_blocks
from .pyramid import downsample, plan_levels
from .safety import check_output_folder, output_lock, write_error
from .units import NGFF_NM, Spacing
from .zarr_read import open_zarr
from .zarr_resume import (
    INCOMPLETE_MARKER,
    PROVENANCE_KEY,
    _read_marker,
    _refuse_link,
    _resume_or_prepare,
    _write_marker,
    check_fingerprint,
    fingerprint_differences,
    finished_fingerprint,
    never_started,
    store_stranger,
)

__all__ = ["INCOMPLETE_MARKER", "NGFF_VERSIONS", "PROVENANCE_KEY", "SHARD_BYTES", "check_fingerprint", "check_ngff",
           "fingerprint_differences", "finished_fingerprint", "never_started", "ngff_version", "open_zarr",
           "shard_shape", "store_stranger", "write_zarr"]

log = logging.getLogger(__name__)


# Default chunk edge lengths of zarr exports (z, y, x).
_ZARR_CHUNKS = (64, 256, 256)

#: The NGFF versions written: 0.4 (zarr format 2, one file per chunk) and 0.5 (zarr format 3, sharded).
NGFF_VERSIONS = ("0.4", "0.5")
#: Largest shard (bytes, uncompressed) of an NGFF 0.5 export, unless a single chunk is larger. A writer holds
#: about twice this per thread (the shard and the chunks it is merged from).
SHARD_BYTES = 128 * 2**20

# The version written when write_zarr is not told one (set for a while by ngff_version).
_DEFAULT_NGFF: contextvars.ContextVar[str] = contextvars.ContextVar("napari_emsr_ngff", default="0.4")


def check_ngff(version: Any) -> str:
    """``version`` as ``"0.4"`` or ``"0.5"``; InputError for anything else."""
    text = str(version).strip().lower().removeprefix("v") if isinstance(version, (str, float)) else None
    if text in NGFF_VERSIONS:
        return text
    raise InputError(
        f"ngff={version!r} is not an OME-Zarr version napari-emsr writes: give '0.4' (zarr format 2, one file per "
        "chunk; read by most tools) or '0.5' (zarr format 3 with sharding: many chunks per file)"
    )


@contextlib.contextmanager
def ngff_version(version: str | None) -> Iterator[str]:
    """Within the block, zarr exports that are not told a version (``ngff=None``) write NGFF ``version``.

    This is how a front end picks the format of exports made deep inside a method's export function; None
    leaves the current default (0.4) as it is. The setting belongs to the calling thread (a context variable).
    """
    if version is None:
        yield _DEFAULT_NGFF.get()
        return
    token = _DEFAULT_NGFF.set(check_ngff(version))
    try:
        yield _DEFAULT_NGFF.get()
    finally:
        _DEFAULT_NGFF.reset(token)


def write_zarr(
    p: Path,
    arr: da.Array,
    spacing: Spacing | None,
    unit: str,
    *,
    overwrite: bool,
    progress: Callable[[int, int], Any] | None,
    chunks: tuple[int, int, int] | None,
    translation: Spacing | None = None,
    pyramid: bool | int = True,
    fingerprint: Mapping[str, str] | None = None,
    ngff: str | None = None,
) -> Path:
    """Write ``arr`` as an OME-Zarr with a pyramid, resumably; see :func:`napari_emsr.io.write_volume`.

    ``ngff`` is ``"0.4"`` or ``"0.5"``; None takes the version of the enclosing :func:`ngff_version` (0.4
    outside one).
    """
    p = Path(p)
    version = check_ngff(_DEFAULT_NGFF.get() if ngff is None else ngff)
    fingerprint = check_fingerprint(fingerprint)
    shape = tuple(int(s) for s in arr.shape)
    dtype = np.dtype(arr.dtype)
    chunks = _check_chunks(arr, chunks, shape)
    data = arr.rechunk(chunks)
    axis = block_axis(data)
    blocks = step_blocks(shape[axis], chunks[axis])
    plan = plan_levels(shape, spacing, _levels_wanted(pyramid))
    level_chunks = [tuple(min(c, s) for c, s in zip(chunks, lshape)) for lshape, _ in plan]
    level_blocks = [step_blocks(lshape[0], lc[0]) for (lshape, _), lc in zip(plan, level_chunks)]
    # NOTE: shards are one chunk thick along the axis the blocks walk, so the blocks (and the marker's
    # progress) are those of NGFF 0.4, and every shard lies in one block.
    shards = None
    if version == "0.5":
        shards = [shard_shape(shape, chunks, axis, dtype.itemsize)]
        shards += [shard_shape(lshape, lc, 0, dtype.itemsize) for (lshape, _), lc in zip(plan, level_chunks)]
        data = data.rechunk(shards[0])
    state = {
        "ngff": version,
        "shape": list(shape),
        "dtype": dtype.str,
        "chunks": list(chunks),
        "axis": axis,
        "total": len(blocks),
        "done": [],
        "levels": [list(lshape) for lshape, _ in plan],
        "levels_done": [],
        "fingerprint": fingerprint,
    }
    if shards is not None:
        state["shards"] = [list(sh) for sh in shards]

    _refuse_link(p)
    check_output_folder(p.parent, writable=False)
    # NOTE: the lock is held from the first look at the store to the removal of its marker: a second writer is
    # refused before it reads, resumes, overwrites or removes anything.
    with output_lock(p, what="output"):
        try:
            arrays = _resume_or_prepare(p, state, overwrite=overwrite)
            resumed = arrays is not None
            if arrays is None:
                arrays = _create(p, state, plan, level_chunks, dtype, spacing, unit, translation)
            marker = _read_marker(p) or state
            _write_blocks(p, state, marker, data, arrays, axis, blocks, plan, level_chunks, level_blocks, progress,
                          resumed=resumed)
        except OSError as exc:
            # NOTE: the marker stays (it was written before the first byte and is removed only after the last),
            # so the store never looks finished and the same call resumes once there is room again.
            done = len(state["done"])
            what_next = (f"then run the same export again: it resumes where it stopped ({done} of {len(blocks)} "
                         "blocks of full resolution written)")
            err = write_error(exc, p, p if p.is_dir() else p.parent, needed=_bytes_left(state, dtype, plan),
                              compressed=True, what_next=what_next)
            if err is not None:
                raise err from None
            raise
        (p / INCOMPLETE_MARKER).unlink()
    log.info("wrote %s (NGFF %s, %s, %s, chunks %s%s, %d level(s))", p, version, shape, dtype, chunks,
             f", shards {shards[0]}" if shards else "", len(plan) + 1)
    return p


def _write_blocks(
    p: Path, state: dict, marker: dict, data: da.Array, arrays: list[Any], axis: int, blocks: list,
    plan: list, level_chunks: list, level_blocks: list, progress: Callable[[int, int], Any] | None,
    *, resumed: bool = False,
) -> None:
    """Write the level-0 blocks and pyramid levels that the marker does not list as done, updating it.

    With shards (``state["shards"]``), every block is stored from data chunked as the shards, so each shard is
    written whole by one task; on a resumed export the shards of a block are deleted before it is written again.
    """
    shards = state.get("shards")
    done = {int(b) for b in marker.get("done", []) if 0 <= int(b) < len(blocks)}
    levels_done = {int(k) for k in marker.get("levels_done", []) if 1 <= int(k) <= len(plan)}
    if done or levels_done:
        log.info("resuming %s: %d of %d blocks and %d of %d pyramid levels already written", p, len(done),
                 len(blocks), len(levels_done), len(plan))
    state["done"], state["levels_done"] = sorted(done), sorted(levels_done)

    total = len(blocks) + sum(len(b) for b in level_blocks)
    count = len(done) + sum(len(level_blocks[k - 1]) for k in levels_done)
    if progress is not None:  # the total at once, before the first block (every front end shows it)
        progress(count, total)
    count = len(done)
    for b, (b0, b1) in enumerate(blocks):
        if b in done:
            continue
        where = region(axis, b0, b1)
        if resumed and shards:
            _drop_shards(p / "0", arrays[0], where)
        da.store(data[where], arrays[0], regions=where, lock=False)
        done.add(b)
        state["done"] = sorted(done)
        _write_marker(p, state)
        count += 1
        if progress is not None:
            progress(count, total)

    for k, ((_, factors), lc, lblocks) in enumerate(zip(plan, level_chunks, level_blocks), start=1):
        if k in levels_done:
            count += len(lblocks)
            continue
        # Each output chunk (shard) of level k comes from one 2x larger block of level k - 1, read back from the
        # store.
        out_chunks = tuple(shards[k]) if shards else lc
        source = da.from_zarr(arrays[k - 1], chunks=tuple(c * f for c, f in zip(out_chunks, factors)))
        coarse = downsample(source, factors)
        for b0, b1 in lblocks:
            where = region(0, b0, b1)
            if resumed and shards:
                _drop_shards(p / str(k), arrays[k], where)
            da.store(coarse[where], arrays[k], regions=where, lock=False)
            count += 1
            if progress is not None:
                progress(count, total)
        levels_done.add(k)
        state["levels_done"] = sorted(levels_done)
        _write_marker(p, state)


def _bytes_left(state: dict, dtype: np.dtype, plan: list) -> int:
    """Uncompressed bytes still to write: the unfinished level-0 blocks and pyramid levels (an upper bound)."""
    total = max(int(state["total"]), 1)
    level0 = int(np.prod(state["shape"], dtype=np.int64)) * dtype.itemsize
    left = level0 * (total - len(state["done"])) // total
    for k, (lshape, _) in enumerate(plan, start=1):
        if k not in state["levels_done"]:
            left += int(np.prod(lshape, dtype=np.int64)) * dtype.itemsize
    return int(left)


def _levels_wanted(pyramid: bool | int) -> int | None:
    """Number of levels asked for: None (automatic) for True, 1 for False, else the number given."""
    if isinstance(pyramid, bool):
        return None if pyramid else 1
    try:
        n = int(pyramid)
    except (TypeError, ValueError):
        raise InputError(f"pyramid={pyramid!r} is not understood: give True, False or a number of levels") from None
    if n < 1:
        raise InputError(f"pyramid={pyramid!r}: give at least 1 level (1 = full resolution only)")
    return n


def _check_chunks(arr: da.Array, chunks: Any, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if chunks is None:
        chunks = _zarr_chunks(arr)
    try:
        out = tuple(max(1, min(int(c), s)) for c, s in zip(chunks, shape))
    except (TypeError, ValueError):
        raise InputError(f"chunks {chunks!r} is not understood: give three whole numbers (z, y, x)") from None
    if len(out) != 3 or len(chunks) != 3:
        raise InputError(f"chunks {chunks!r} must have three entries (z, y, x)")
    return out  # type: ignore[return-value]


def _zarr_chunks(arr: da.Array) -> tuple[int, int, int]:
    """Zarr chunks for ``arr``: its own dask chunks when regular and 1-128 MB, else (64, 256, 256).

    Keeping the dask chunks means every chunk is computed exactly once (no rechunking of computed data).
    """
    first = tuple(int(c[0]) for c in arr.chunks)
    regular = all(all(int(x) == c[0] for x in c[:-1]) and int(c[-1]) <= c[0] for c in arr.chunks)
    nbytes = int(np.prod(first, dtype=np.int64)) * arr.dtype.itemsize
    if regular and 2**20 <= nbytes <= 128 * 2**20:
        return first  # type: ignore[return-value]
    return _ZARR_CHUNKS


def _create(
    p: Path,
    state: dict,
    plan: list,
    level_chunks: list,
    dtype: np.dtype,
    spacing: Spacing | None,
    unit: str,
    translation: Spacing | None,
) -> list[Any]:
    """Create the store with the marker in it first, the NGFF metadata and every (empty) level array."""
    import numcodecs
    import zarr

    # NOTE: the marker is written into the empty folder before zarr creates anything, and create_group
    # (unlike open_group(mode="w")) leaves the folder's other files alone, so the store is never without it.
    made = not p.exists()
    p.mkdir(exist_ok=True)
    try:
        _write_marker(p, state)
    except BaseException:
        # Without its marker the folder could not be told from someone else's: leave it as it was (at most a
        # partial temporary marker is in it).
        (p / (INCOMPLETE_MARKER + ".tmp")).unlink(missing_ok=True)
        if made:
            p.rmdir()
        raise
    v3 = state.get("ngff") == "0.5"
    group = zarr.create_group(str(p), zarr_format=3 if v3 else 2)
    name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
    attrs = ngff.image_attrs(name, _level_transforms(plan, spacing, translation),
                             NGFF_NM if spacing is not None and unit == "nm" else None,
                             metadata={"written_by": "napari-emsr",
                                       "method": "mean of 2 voxels per halved axis; integers rounded"},
                             version="0.5" if v3 else "0.4")
    if state.get("fingerprint") is not None:
        # Provenance: what produced the data (outside "multiscales" and "ome", which NGFF defines).
        attrs[PROVENANCE_KEY] = {"fingerprint": dict(state["fingerprint"])}
    group.attrs.update(attrs)
    shapes = [tuple(state["shape"])] + [lshape for lshape, _ in plan]
    all_chunks = [tuple(state["chunks"])] + level_chunks
    if v3:
        from zarr.codecs import BloscCodec

        # NOTE: zarr v3 keys ("c/0/1/2") and dimension names equal to the NGFF axes, as NGFF 0.5 asks.
        layout: list[dict] = [
            {"shards": tuple(sh), "dimension_names": ("z", "y", "x"),
             "compressors": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")}
            for sh in state["shards"]
        ]
    else:
        compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
        layout = [{"compressors": compressor, "chunk_key_encoding": {"name": "v2", "separator": "/"}}] * len(shapes)
    return [
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kw)
        for k, (shape, chunks, kw) in enumerate(zip(shapes, all_chunks, layout))
    ]


def shard_shape(
    shape: tuple[int, ...], chunks: tuple[int, ...], axis: int, itemsize: int, budget: int = SHARD_BYTES
) -> tuple[int, int, int]:
    """The shard of an NGFF 0.5 array: whole chunks, one thick along ``axis``, at most ``budget`` bytes.

    The shard grows across the other two axes, always along the one it is shorter on (in voxels), until it
    covers them or the next chunks would pass ``budget``; a chunk larger than ``budget`` is a shard of its own.
    One chunk along ``axis`` keeps a block of the write (a row of chunks along ``axis``) a row of whole shards.

    Parameters
    ----------
    shape, chunks : tuple of 3 int
        The array's shape and chunks (each chunk at most the shape).
    axis : int
        The axis the write walks along in blocks.
    itemsize : int
        Bytes per voxel.
    budget : int
        Largest shard in bytes, uncompressed.

    Returns
    -------
    tuple of 3 int
        Multiples of ``chunks`` (a shard may reach past the array's end, as the last chunk may).
    """
    counts = [-(-int(s) // int(c)) for s, c in zip(shape, chunks)]
    chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * int(itemsize)
    many = [1, 1, 1]
    growing = [a for a in range(3) if a != axis and counts[a] > 1]
    while growing:
        a = min(growing, key=lambda i: (many[i] * chunks[i], i))
        others = int(np.prod([many[i] for i in range(3) if i != a], dtype=np.int64))
        fit = budget // max(1, chunk_bytes * others)
        wanted = min(counts[a], 2 * many[a], fit)
        if wanted <= many[a]:
            growing.remove(a)
            continue
        many[a] = wanted
        if wanted >= counts[a]:
            growing.remove(a)
    return tuple(int(c) * m for c, m in zip(chunks, many))  # type: ignore[return-value]


def _drop_shards(folder: Path, array: Any, where: tuple[slice, ...]) -> None:
    """Delete the shard files of array ``array`` (stored in ``folder``) that the region ``where`` covers.

    A resumed export writes a block again from scratch; zarr reads a shard before it writes it, so a shard
    torn by a crash (e.g. power lost before its bytes reached the disk) would fail that write.
    """
    import itertools

    ranges = []
    for sl, n, sh in zip(where, array.shape, array.shards):
        start, stop, _ = sl.indices(int(n))
        ranges.append(range(start // sh, -(-stop // sh)))
    for coords in itertools.product(*ranges):
        (folder / array.metadata.encode_chunk_key(coords)).unlink(missing_ok=True)


def _level_transforms(
    plan: list, spacing: Spacing | None, translation: Spacing | None
) -> list[tuple[str, list[float], list[float] | None]]:
    """(path, scale, translation) of every level: level 0's voxel size times the cumulative factors.

    A coarser voxel is the mean of a block of level-0 voxels, so its centre is shifted by half the block less
    one voxel: that shift is the translation of levels 1 and up (added to ``translation`` when given).
    """
    base = list(spacing) if spacing is not None else [1.0, 1.0, 1.0]
    origin = list(translation) if translation is not None else [0.0, 0.0, 0.0]
    first = list(translation) if translation is not None else None
    out: list[tuple[str, list[float], list[float] | None]] = [("0", base, first)]
    cum = [1, 1, 1]
    for k, (_, factors) in enumerate(plan, start=1):
        cum = [c * f for c, f in zip(cum, factors)]
        scale = [s * c for s, c in zip(base, cum)]
        shift = [o + (c - 1) / 2 * s for o, c, s in zip(origin, cum, base)]
        out.append((str(k), scale, shift))
    return out


