"""OME-Zarr and plain zarr: lazy reading of every pyramid level, and resumable block-wise export with a pyramid.

Reading opens a plain zarr array as it is (no voxel size), or an OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on
zarr v3) through :mod:`napari_emsr.io.ngff`: the voxel size and translation of the chosen level in nm, and
every level from it down to the coarsest as lazy dask arrays.

Writing makes an NGFF 0.4 image on zarr format 2 (Blosc-zstd): level ``"0"`` computed block by block from
the lazy input, then 2x mean-downsampled levels ``"1"``, ``"2"`` ... read back chunk by chunk from the level
before (:mod:`napari_emsr.io.pyramid`). The :data:`INCOMPLETE_MARKER` file exists from before the first
byte of the store until the last level is written; it lists the finished level-0 blocks and pyramid levels,
so that writing the same volume again resumes where it stopped.

One writer at a time: a write holds :func:`napari_emsr.io.safety.output_lock` on the store from its first
check to its last byte (a resume and the removal of a store being overwritten included), so a second process
writing the same store is refused at once, naming the first, and a finished store never mixes two writers'
data. An output path that is a symbolic link is refused (its target is never written into nor deleted), and a
folder is overwritten only when it is a zarr store through and through: some array in it, and nothing but
zarr metadata and chunks (:func:`store_stranger`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError, OutputExistsError
from . import ngff
from .blocks import block_axis, region, step_blocks
from .formats import NOT_A_VOLUME, looks_like_zarr
from .lazy import LazyArray
from .pyramid import downsample, plan_levels
from .safety import OutputError, check_output_folder, not_writable_message, output_lock, write_error
from .units import NGFF_NM, Spacing, normalise_unit, spacing_in_nm
from .volume import Volume, check_volume, reduce_axes

log = logging.getLogger(__name__)

#: Name of the file that marks a zarr export as unfinished (JSON: shape, dtype, chunks, finished blocks,
#: and the fingerprint of what produces the data).
INCOMPLETE_MARKER = ".emsr_incomplete"
#: Key of napari-emsr's own group attributes in an exported OME-Zarr (``{"fingerprint": {...}}``).
PROVENANCE_KEY = "napari_emsr"

# Default chunk edge lengths of zarr exports (z, y, x).
_ZARR_CHUNKS = (64, 256, 256)


# ---- reading --------------------------------------------------------------------------------------


def _join(p: Path | str, name: str) -> Path | str:
    """``p / name`` for a folder, ``p/name`` for a URL (a ``Path`` would fold its ``//``)."""
    return p / name if isinstance(p, Path) else f"{p.rstrip('/')}/{name}"


def open_zarr(p: Path | str, *, channel: int | None, level: int) -> Volume:
    """Open a zarr array or OME-Zarr image lazily; see :func:`napari_emsr.io.open_volume`.

    ``p`` is a folder, or a URL that zarr opens through fsspec (the caller has checked that it exists and is
    not an unfinished export). ``Volume.levels`` holds the requested level and every coarser one
    (``levels[0]`` is the data); spacing and translation are those of the requested level.
    """
    import zarr

    if isinstance(p, Path) and (p / INCOMPLETE_MARKER).exists():
        raise InputError(
            f"{p} is an unfinished export (it still has the {INCOMPLETE_MARKER} marker): run the export "
            "again to complete it, or delete the folder"
        )
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(NOT_A_VOLUME.format(path=p) + f" (zarr could not open it: {exc})") from None

    if isinstance(node, zarr.Array):
        data = check_volume(_lazy_array(p, node, ""), channel=channel)
        return Volume(data=data, spacing=None, unit="nm", source=str(p))

    doc, version = ngff.find_multiscales(dict(node.attrs))
    if doc is None:
        names = sorted(_array_names(node))
        hint = f"; it holds the arrays {names}: open one of them, e.g. {_join(p, names[0])}" if names else ""
        raise InputError(
            NOT_A_VOLUME.format(path=p) + f" (a zarr group without OME-Zarr 'multiscales' metadata{hint})"
        )
    try:
        image = ngff.parse_image(doc, version, ndim_of=lambda path: _ndim(node, path))
    except InputError as err:
        raise InputError(f"{p}: {err}") from None
    n = len(image.levels)
    if level >= n:
        raise InputError(f"{p} has {n} resolution level(s); level {level} does not exist: pick 0..{max(n - 1, 0)}")

    letters = _axis_letters(image.axes)
    levels: list[da.Array] = []
    for k in range(level, n):
        path = image.levels[k].path
        try:
            arr = node[path]
            if not isinstance(arr, zarr.Array):
                raise TypeError(f"{path!r} is a group, not an array")
        except Exception as exc:
            if k == level:
                raise InputError(
                    f"{p} is an OME-Zarr whose dataset {path!r} cannot be read ({exc}): "
                    "the export may be incomplete; write it again"
                ) from None
            log.warning("%s: pyramid level %d (%r) cannot be read (%s); using levels %d..%d", p, k, path, exc,
                        level, k - 1)
            break
        if arr.ndim != len(letters):
            msg = (
                f"OME-Zarr metadata lists {len(letters)} axes but the data of {path!r} has {arr.ndim}: the file is "
                "inconsistent; open the array folder inside it directly"
            )
            if k == level:
                raise InputError(msg)
            log.warning("%s; using levels %d..%d", msg, level, k - 1)
            break
        try:
            lazy = _lazy_array(p, arr, path)
        except InputError:
            if k == level:
                raise
            log.warning("%s: pyramid level %d (%r) is not usable; using levels %d..%d", p, k, path, level, k - 1)
            break
        # NOTE: coarse levels may be one voxel thick, so only level ``level`` gets the full volume checks.
        levels.append(check_volume(lazy, channel=channel, axes=letters) if k == level
                      else reduce_axes(lazy, channel=channel, axes=letters))

    spacing, unit, translation = _physical(image, level, letters)
    return Volume(
        data=levels[0], spacing=spacing, unit=unit, source=str(p), translation=translation, levels=tuple(levels)
    )


#: Most chunks a zarr array may have: dask lists every chunk, so a store that declares more (a damaged or
#: hostile ``.zarray``, e.g. a shape of 10**12) would exhaust memory before anything is read.
_MAX_CHUNKS = 2**27
#: Largest chunk (bytes, decoded) read at once: a larger one is refused when the store is opened.
_MAX_CHUNK_BYTES = 2**32


def _lazy_array(p: Path | str, arr: Any, path: str) -> da.Array:
    """A dask array over a zarr array, chunk for chunk, whose reads end in InputError when a chunk is damaged.

    The shape and chunks the store declares are checked first (positive chunks, a number of chunks dask can
    list, chunks that can be decoded one at a time).
    """
    shape = tuple(int(s) for s in arr.shape)
    chunks = tuple(int(c) for c in arr.chunks)
    dtype = np.dtype(arr.dtype)
    where = f"{p}" + (f" (array {path!r})" if path else "")
    if len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise InputError(f"{where} declares chunks {chunks} for shape {shape}: the zarr metadata is damaged")
    counts = [-(-s // c) for s, c in zip(shape, chunks)]
    n_chunks = math.prod(counts)
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    if n_chunks > _MAX_CHUNKS:
        raise InputError(
            f"{where} declares shape {shape} in chunks {chunks}: {n_chunks:.3g} chunks, more than napari-emsr can "
            f"handle ({_MAX_CHUNKS}); the zarr metadata is damaged, or the store needs larger chunks (rechunk it)"
        )
    if chunk_bytes > _MAX_CHUNK_BYTES:
        raise InputError(
            f"{where} declares chunks {chunks} of {chunk_bytes / 2**30:.3g} GiB each, too large to read one at a "
            "time; the zarr metadata is damaged, or the store needs smaller chunks (rechunk it)"
        )
    from dask.base import tokenize

    reader = _LazyZarr(str(p), path, shape, dtype, chunks, arr)
    name = "zarr-" + tokenize(str(p), path, shape, dtype.str, chunks, _mtime(p / path) if isinstance(p, Path) else 0)
    return da.from_array(reader, chunks=chunks, name=name, fancy=False, lock=False,
                         meta=np.empty((0,) * len(shape), dtype=dtype))


def _mtime(p: Path) -> int:
    try:
        meta = [m.stat().st_mtime_ns for m in (p / ".zarray", p / "zarr.json") if m.exists()]
        return max([p.stat().st_mtime_ns, *meta])
    except OSError:
        return 0


class _LazyZarr(LazyArray):
    """Array-like view of one zarr array that says which chunk is damaged when a read fails.

    A chunk that cannot be decoded (overwritten, truncated) fails only when the data is computed, deep inside
    dask; this turns numcodecs' and zarr's errors into an InputError naming the store and the chunk. It can be
    pickled (the open array is dropped and opened again where needed), so dask graphs built on it can be sent
    to ``dask.distributed`` workers.
    """

    def __init__(self, store: str, path: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                 arr: Any = None) -> None:
        self.store, self.path = store, path
        self.shape, self.dtype, self.chunks = shape, dtype, chunks
        self.ndim = len(shape)
        self._arr = arr

    def _open(self) -> Any:
        import zarr

        node = zarr.open(self.store, mode="r")
        return node[self.path] if self.path else node

    def _damaged(self, key: Any, exc: Exception) -> InputError:
        chunk = self._bad_chunk(key)
        what = f"the chunk {chunk!r} of " if chunk else "a chunk of "
        where = f"the array {self.path!r} in " if self.path else ""
        return InputError(
            f"{what}{where}{self.store} cannot be read ({type(exc).__name__}: {exc}): the store is damaged "
            "(a chunk file overwritten or cut short); copy it again from its source, or write it again"
        )

    def _bad_chunk(self, key: Any, limit: int = 64) -> str | None:
        """The key of the first chunk in ``key`` (a tuple of slices) that cannot be read, trying at most ``limit``."""
        try:
            import itertools

            key = key if isinstance(key, tuple) else (key,)
            ranges = []
            for i, c in enumerate(self.chunks):
                sl = key[i] if i < len(key) and isinstance(key[i], slice) else slice(None)
                start, stop, _ = sl.indices(self.shape[i])
                ranges.append(range(start // c, max(start // c + 1, -(-stop // c))))
            arr = self.open()
            for n, coords in enumerate(itertools.product(*ranges)):
                if n >= limit:
                    return None
                sel = tuple(slice(j * c, min((j + 1) * c, s)) for j, c, s in zip(coords, self.chunks, self.shape))
                try:
                    arr[sel]
                except Exception:
                    try:
                        return str(arr.metadata.encode_chunk_key(coords))
                    except Exception:
                        return ".".join(str(j) for j in coords)
        except Exception:
            return None
        return None



def _ndim(group: Any, path: str) -> int | None:
    try:
        return int(group[path].ndim)
    except Exception:
        return None


def _array_names(group: Any) -> list[str]:
    try:
        return [str(k) for k in group.array_keys()]
    except Exception:
        return []


def _axis_letters(axes: tuple[ngff.NgffAxis, ...]) -> str:
    """Axis letters for :func:`check_volume`: the last three space axes are Z, Y, X; time T; others C."""
    letters = ["C" if ax.type != "time" else "T" for ax in axes]
    spatial = [i for i, ax in enumerate(axes) if ax.type == "space"]
    for i, letter in zip(spatial[-3:], "ZYX"[-len(spatial[-3:]) :] if spatial else ""):
        letters[i] = letter
    for i in spatial[:-3]:
        letters[i] = "T"
    return "".join(letters)


def _physical(
    image: ngff.NgffImage, level: int, letters: str
) -> tuple[Spacing | None, str, Spacing | None]:
    """Voxel size, unit and translation of one level, in nm where the axes' units are known lengths."""
    sp = [i for i, ch in enumerate(letters) if ch in "ZYX"]
    if len(sp) != 3:
        return None, "nm", None
    lvl = image.levels[level]
    values = tuple(float(lvl.scale[i]) for i in sp)
    units = [image.axes[i].unit for i in sp]
    factors = [normalise_unit(u)[1] for u in units]
    if all(f is not None for f in factors):
        # Known lengths (the same or different ones per axis): everything in nm.
        spacing, unit = spacing_in_nm(tuple(v * f for v, f in zip(values, factors)), "nm")  # type: ignore[operator]
    else:
        factors = [1.0, 1.0, 1.0]
        same = units[0] if len(set(units)) == 1 else None
        if same is None and all(v == 1.0 for v in values):
            return None, "nm", None  # no units and unit scale: the file does not state a voxel size
        spacing, unit = spacing_in_nm(values, same)
    if spacing is None or lvl.translation is None:
        return spacing, unit, None
    translation = tuple(float(lvl.translation[i]) * f for i, f in zip(sp, factors))  # type: ignore[operator]
    return spacing, unit, translation  # type: ignore[return-value]


# ---- writing --------------------------------------------------------------------------------------


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
) -> Path:
    """Write ``arr`` as an OME-Zarr with a pyramid, resumably; see :func:`napari_emsr.io.write_volume`."""
    p = Path(p)
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
    state = {
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

    _refuse_link(p)
    check_output_folder(p.parent, writable=False)
    # NOTE: the lock is held from the first look at the store to the removal of its marker: a second writer is
    # refused before it reads, resumes, overwrites or removes anything.
    with output_lock(p, what="output"):
        try:
            arrays = _resume_or_prepare(p, state, overwrite=overwrite)
            if arrays is None:
                arrays = _create(p, state, plan, level_chunks, dtype, spacing, unit, translation)
            marker = _read_marker(p) or state
            _write_blocks(p, state, marker, data, arrays, axis, blocks, plan, level_chunks, level_blocks, progress)
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
    log.info("wrote %s (%s, %s, chunks %s, %d level(s))", p, shape, dtype, chunks, len(plan) + 1)
    return p


def _write_blocks(
    p: Path, state: dict, marker: dict, data: da.Array, arrays: list[Any], axis: int, blocks: list,
    plan: list, level_chunks: list, level_blocks: list, progress: Callable[[int, int], Any] | None,
) -> None:
    """Write the level-0 blocks and pyramid levels that the marker does not list as done, updating it."""
    done = {int(b) for b in marker.get("done", []) if 0 <= int(b) < len(blocks)}
    levels_done = {int(k) for k in marker.get("levels_done", []) if 1 <= int(k) <= len(plan)}
    if done or levels_done:
        log.info("resuming %s: %d of %d blocks and %d of %d pyramid levels already written", p, len(done),
                 len(blocks), len(levels_done), len(plan))
    state["done"], state["levels_done"] = sorted(done), sorted(levels_done)

    total = len(blocks) + sum(len(b) for b in level_blocks)
    count = len(done)
    for b, (b0, b1) in enumerate(blocks):
        if b in done:
            continue
        where = region(axis, b0, b1)
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
        # Each output chunk of level k comes from one 2x larger block of level k - 1, read back from the store.
        source = da.from_zarr(arrays[k - 1], chunks=tuple(c * f for c, f in zip(lc, factors)))
        coarse = downsample(source, factors)
        for b0, b1 in lblocks:
            where = region(0, b0, b1)
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


def check_fingerprint(fingerprint: Any) -> dict[str, str] | None:
    """``fingerprint`` as a plain dict of strings (None stays None); InputError for anything else."""
    if fingerprint is None:
        return None
    if not isinstance(fingerprint, Mapping):
        raise InputError(f"fingerprint {fingerprint!r} must be a mapping of strings to strings, or None")
    out = {}
    for key, value in fingerprint.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(
                f"fingerprint entry {key!r}: {value!r} is not a string to a string: give e.g. "
                "{'input': '/data/stack.tif', 'method': 'cubic'}"
            )
        out[key] = value
    return dict(sorted(out.items()))


def fingerprint_differences(before: Any, now: dict[str, str] | None) -> str | None:
    """What differs between the fingerprint an export was written with and the one given now (None: nothing)."""
    before = before if isinstance(before, dict) or before is None else {"?": str(before)}
    if before == now:
        return None
    if before is None:
        return (f"the unfinished export was written without a fingerprint, this call gives {now} "
                "(it may come from an older version or another program)")
    if now is None:
        return f"the unfinished export was written from {before}, this call gives no fingerprint"
    keys = sorted(set(before) | set(now))
    parts = [f"{k}: {before.get(k, '(none)')!r} before, {now.get(k, '(none)')!r} now"
             for k in keys if before.get(k) != now.get(k)]
    return "; ".join(parts)


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


def _resume_or_prepare(p: Path, state: dict, *, overwrite: bool) -> list[Any] | None:
    """The arrays of an unfinished export of the same volume to resume, or None once ``p`` is free to create.

    Raises OutputExistsError for an existing output that may not be replaced, InputError for a folder that is
    not a zarr store (never deleted).
    """
    check_output_folder(p.parent, writable=not p.exists())
    if not p.exists():
        return None
    if p.is_file():
        if not overwrite:
            raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
        p.unlink()
        return None
    if not p.is_dir():
        raise OutputExistsError(f"{p} exists and is neither a file nor a folder; choose another output path")
    if never_started(p):
        # An empty folder (made by hand, or an export killed right after creating it, before its marker was in
        # place: at most the marker's temporary file): nothing to lose.
        (p / (INCOMPLETE_MARKER + ".tmp")).unlink(missing_ok=True)
        check_output_folder(p)
        return None
    unfinished = (p / INCOMPLETE_MARKER).exists()
    marker = _read_marker(p) if unfinished else None
    keys = ("shape", "dtype", "chunks")
    if (
        marker is not None
        and not overwrite
        and all(marker.get(k) == state[k] for k in keys)
        and marker.get("axis", 0) == state["axis"]
        and marker.get("levels", []) == state["levels"]
    ):
        differs = fingerprint_differences(marker.get("fingerprint"), state["fingerprint"])
        if differs is not None:
            raise OutputExistsError(
                f"{p} holds an unfinished export of the same shape made from other data or settings ({differs}); "
                "finishing it with this call would mix two results in one volume. Pass overwrite=True "
                "(CLI: --overwrite) to start again, or re-run exactly the earlier command to complete it"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(not_writable_message(p))
        arrays = _open_levels(p, state)
        if arrays is not None:
            return arrays
        # Our own unfinished export of this very volume whose arrays cannot all be opened (e.g. it stopped
        # before they were created): nothing worth keeping, start it afresh.
        log.info("restarting the unfinished export %s: its arrays cannot be opened", p)
        _check_removable(p)
        _remove_store(p)
        return None
    if marker is not None and marker.get("removing") and not overwrite:
        raise OutputExistsError(
            f"{p} was being removed to be overwritten when that was interrupted; pass overwrite=True "
            "(CLI: --overwrite) to write it again, or delete the folder"
        )
    if marker is not None and "levels" not in marker and not overwrite:
        raise OutputExistsError(
            f"{p} holds an unfinished export written by an older version of napari-emsr (its marker lists no "
            "pyramid levels), which this version cannot finish: pass overwrite=True (CLI: --overwrite) to write it "
            "again, or finish it with the version that started it"
        )
    if unfinished and not overwrite:
        raise OutputExistsError(
            f"{p} holds an unfinished export of a different volume (shape, dtype, chunks or pyramid differ); "
            "pass overwrite=True (CLI: --overwrite) to start again, or choose another path"
        )
    if not overwrite:
        raise OutputExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or choose another path")
    if not unfinished and not looks_like_zarr(p):
        raise InputError(f"{p} is a folder that is not a zarr store; refusing to delete it: choose another output path")
    _check_removable(p)
    _remove_store(p)
    return None


def _refuse_link(p: Path) -> None:
    """Refuse an output path that is a symbolic link (to a store, a file, or nothing).

    Overwriting through it would delete what it points to, and writing through it would put the store
    somewhere the path does not say; replacing the link instead would surprise whoever made it. The user gives
    the real path.
    """
    if not p.is_symlink():
        return
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    real = p.resolve()
    raise InputError(
        f"{p} is a symbolic link (to {target}); napari-emsr does not write through a link or replace it, so that "
        f"what it points to is never deleted or mixed with another result: give the real path ({real}) as the "
        "output, or another path"
    )


#: Names of zarr metadata files (v3 node, v2 array, group, attributes, consolidated metadata).
_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
# Our own files in a store: the marker and its temporary file.
_OURS = frozenset({INCOMPLETE_MARKER, INCOMPLETE_MARKER + ".tmp"})
# One part of a chunk key between separators ("/" or "."): an index, or v3's "c" prefix.
_CHUNK_KEY = re.compile(r"(?:c|\d+)(?:\.(?:c|\d+))*")
# What zarr's local store writes a file to before renaming it into place: "<name>.<32 hex>.partial".
_ZARR_PARTIAL = re.compile(r".*\.[0-9a-f]{32}\.partial")


def _is_array_folder(names: set[str], folder: str) -> bool:
    if ".zarray" in names:
        return True
    if "zarr.json" not in names:
        return False
    try:
        with open(os.path.join(folder, "zarr.json"), "rb") as fh:
            meta = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "array"


def _chunk_like(parts: list[str]) -> bool:
    return all(_CHUNK_KEY.fullmatch(part) for part in parts)


def store_stranger(p: Path) -> tuple[Path | None, bool]:
    """The first entry of folder ``p`` that is not part of a zarr store, and whether ``p`` holds an array.

    Part of a store are: zarr metadata files anywhere; files under an array's folder whose path from it is a
    chunk key (``0.1.2``, ``0/1/2``, ``c/0/1/2``, shards included); the temporary files zarr writes before
    renaming; and, in an unfinished export of ours (with :data:`INCOMPLETE_MARKER`), our marker and the
    chunks of levels whose metadata an interrupted removal already deleted. Anything else (a user's file, a
    symbolic link, a pipe) is a stranger. Nothing is followed through links; empty folders are no strangers.
    """
    ours = (p / INCOMPLETE_MARKER).is_file()
    has_array = False
    array_root: dict[str, str] = {}
    for folder, dirs, files in os.walk(p, topdown=True, followlinks=False, onerror=_raise):
        dirs.sort()
        files.sort()
        names = set(files)
        parent = array_root.get(os.path.dirname(folder))
        if _is_array_folder(names, folder):
            has_array = True
            root = folder
        else:
            root = parent
        array_root[folder] = root  # type: ignore[assignment]
        for name in files + dirs:
            entry = os.path.join(folder, name)
            if os.path.islink(entry):
                return Path(entry), has_array
            if name in dirs:
                continue
            if not os.path.isfile(entry):  # a pipe, a socket, a device
                return Path(entry), has_array
            if name in _METADATA or _ZARR_PARTIAL.fullmatch(name):
                continue
            if folder == str(p) and name in _OURS:
                continue
            if root is not None and _chunk_like(os.path.relpath(entry, root).split(os.sep)):
                continue
            if ours and _chunk_like(os.path.relpath(entry, p).split(os.sep)):
                continue  # our levels are named 0, 1, ...: chunks left by an interrupted removal or creation
            return Path(entry), has_array
    return None, has_array


def _raise(exc: OSError) -> None:
    raise exc


def _check_removable(p: Path) -> None:
    """Refuse to delete a folder that is not a zarr store through and through (see :func:`store_stranger`).

    A folder whose only zarr-looking file is a stray ``.zattrs`` is no store: it must hold an array (or be an
    unfinished export of ours), and nothing else than zarr metadata and chunks.

    Raises
    ------
    InputError
        Naming the first file that is not part of a zarr store, or saying that no array is in it.
    """
    try:
        stranger, has_array = store_stranger(p)
    except OSError as exc:
        raise OutputError(f"cannot look through {p} before overwriting it ({exc.strerror or exc}): check its "
                          "permissions, or choose another output path") from None
    if stranger is not None:
        what = "a symbolic link" if stranger.is_symlink() else ("not a regular file" if not stranger.is_file()
                                                               else "not part of a zarr store")
        raise InputError(
            f"{p} holds {stranger.relative_to(p)} ({what}); refusing to overwrite the folder, which would delete "
            "it: move it out of the folder (or delete it yourself), or choose another output path"
        )
    if not has_array and not (p / INCOMPLETE_MARKER).is_file():
        raise InputError(
            f"{p} holds no zarr array (only zarr metadata), so it is not a store napari-emsr would replace; "
            "refusing to delete it: delete it yourself, or choose another output path"
        )


def _remove_store(p: Path) -> None:
    """Delete a zarr store (one of ours, or one to overwrite) so that no moment of it looks like a finished volume.

    The caller holds the store's lock and has checked it with :func:`_check_removable` (``p`` is no link, and
    holds nothing but zarr files). A plain ``rmtree`` killed halfway could leave the metadata with part of the
    chunks (zarr reads the missing ones as zeros): the marker goes in first, then the metadata (the store's
    own first, then every array's and group's, so that no part of it opens on its own), then the chunks, and
    the marker last.
    """
    try:
        _write_marker(p, {"removing": True})
    except OSError:
        pass  # e.g. a full disk: removing the metadata first is enough to keep it from opening
    for name in sorted(_METADATA):
        meta = p / name
        if meta.is_file() and not meta.is_symlink():
            meta.unlink()
    for folder, _, files in os.walk(p, followlinks=False):
        for name in files:
            if name in _METADATA:
                os.unlink(os.path.join(folder, name))
    for child in p.iterdir():
        if child.name == INCOMPLETE_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (p / INCOMPLETE_MARKER).unlink(missing_ok=True)
    p.rmdir()


def _open_levels(p: Path, state: dict) -> list[Any] | None:
    """The level arrays of an unfinished export, when they all exist with the shapes and dtype expected."""
    import zarr

    shapes = [tuple(state["shape"])] + [tuple(s) for s in state["levels"]]
    arrays = []
    for k, shape in enumerate(shapes):
        try:
            a = zarr.open_array(str(p / str(k)), mode="r+")
        except Exception:
            return None
        if tuple(a.shape) != shape or np.dtype(a.dtype) != np.dtype(state["dtype"]):
            return None
        arrays.append(a)
    return arrays


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
    group = zarr.create_group(str(p), zarr_format=2)
    name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
    attrs = ngff.image_attrs(name, _level_transforms(plan, spacing, translation),
                             NGFF_NM if spacing is not None and unit == "nm" else None,
                             metadata={"written_by": "napari-emsr",
                                       "method": "mean of 2 voxels per halved axis; integers rounded"})
    if state.get("fingerprint") is not None:
        # Provenance: what produced the data (outside "multiscales", which NGFF defines).
        attrs[PROVENANCE_KEY] = {"fingerprint": dict(state["fingerprint"])}
    group.attrs.update(attrs)
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    shapes = [tuple(state["shape"])] + [lshape for lshape, _ in plan]
    all_chunks = [tuple(state["chunks"])] + level_chunks
    arrays = []
    for k, (shape, chunks) in enumerate(zip(shapes, all_chunks)):
        arrays.append(
            group.create_array(
                str(k),
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                compressors=compressor,
                chunk_key_encoding={"name": "v2", "separator": "/"},
                fill_value=0,
            )
        )
    return arrays


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


def never_started(p: Path) -> bool:
    """Whether ``p`` is a folder an export may take as new: empty, or holding only the marker's temporary file
    (an export SIGKILLed between creating the folder and renaming its marker into place)."""
    return p.is_dir() and all(c.name == INCOMPLETE_MARKER + ".tmp" for c in p.iterdir())


def finished_fingerprint(p: Path) -> dict[str, str] | None:
    """The fingerprint of a *finished* export in folder ``p`` (no marker), None when ``p`` is anything else: no
    folder, an unfinished export, a zarr written without one or not by napari-emsr."""
    p = Path(p)
    if not p.is_dir() or (p / INCOMPLETE_MARKER).exists():
        return None
    try:
        attrs = json.loads((p / ".zattrs").read_text())
    except (OSError, ValueError):
        return None
    fp = attrs.get(PROVENANCE_KEY, {}).get("fingerprint") if isinstance(attrs, dict) else None
    return dict(fp) if isinstance(fp, dict) else None


def _write_marker(folder: Path, state: dict) -> None:
    # NOTE: a fixed temporary name, inside the store: safe because every write of the marker happens with the
    # store's output_lock held (write_zarr), so no second writer can share it; never_started() knows the name.
    tmp = folder / (INCOMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / INCOMPLETE_MARKER)


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / INCOMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
