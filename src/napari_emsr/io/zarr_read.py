"""OME-Zarr and plain zarr reading: a plain zarr array as it is (no voxel size), or an OME-Zarr image (NGFF 0.4
on zarr v2, 0.5 on zarr v3) through :mod:`napari_emsr.io.ngff`: the voxel size and translation of the chosen level
in nm, and every level from it down to the coarsest as lazy dask arrays. Writing is :mod:`napari_emsr.io.omezarr`.

A sharded array (zarr v3) is read chunk by chunk, as any other: a dask chunk is one chunk inside a shard, never
the whole shard, so a napari plane stays cheap.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError
from . import ngff
from .formats import NOT_A_VOLUME
from .lazy import LazyArray
from .units import Spacing, normalise_unit, spacing_in_nm
from .volume import Volume, check_volume, reduce_axes
from .zarr_resume import INCOMPLETE_MARKER

log = logging.getLogger(__name__)


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
                    # NOTE: in a sharded array (zarr v3) the file is the shard that holds the chunk.
                    shards = getattr(arr, "shards", None)
                    if shards:
                        coords = tuple(j * c // s for j, c, s in zip(coords, self.chunks, shards))
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


