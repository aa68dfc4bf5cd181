"""TIFF stacks: ImageJ hyperstacks, OME-TIFF and plain multi-page TIFF, read lazily (writing: :mod:`.tiff_write`).

Reading goes through tifffile's zarr view of the file, so one plane (or tile) is read at a time; the voxel
size comes from OME-XML ``PhysicalSize*`` or ImageJ's ``spacing`` and resolution tags. Writing fills an
uncompressed memory-mapped file under a unique temporary name, with the output locked against other writers,
and renames it when complete; the temporary files a killed write leaves are refused by
:func:`napari_emsr.io.open_volume` and removed by the next write of the same output.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError
from .formats import NOT_A_VOLUME
from .lazy import LazyArray
from .units import Spacing, normalise_unit, spacing_in_nm
from .volume import Volume, check_volume

log = logging.getLogger(__name__)

# Bytes of one TIFF write block (a group of z planes computed at once).
_TIFF_BLOCK_BYTES = 256 * 2**20
# ImageJ TIFF cannot be BigTIFF: above this size we write OME-TIFF (BigTIFF) instead.
_BIGTIFF_BYTES = int(3.5 * 2**30)
# Bytes of an output's name that temporary names keep whole (io.safety keeps 120).
_KEPT_NAME_BYTES = 120


def open_tiff(p: Path, *, channel: int | None, level: int, series: int | None = None) -> Volume:
    """Open one image series of a TIFF (resolution ``level``) lazily; see :func:`napari_emsr.io.open_volume`.

    ``series`` None picks the largest 3D series (an OME-TIFF may hold a thumbnail or a 2D overview first) and
    says which when there are several; a number picks that series.
    """
    import tifffile

    warned = _TiffWarnings()
    where = ""
    try:
        with warned, tifffile.TiffFile(p) as tf:
            # NOTE: the chain of pages is walked first: a damaged chain (a page pointing back to an earlier one)
            # is only logged by tifffile, and its series detection then loops forever over the same pages.
            len(tf.pages)
            _refuse_damage(p, warned)
            if not tf.series:
                raise InputError(NOT_A_VOLUME.format(path=p) + " (the TIFF holds no image series)")
            index = pick_series(p, tf.series, series)
            chosen = tf.series[index]
            where = _series_words(tf.series, index)
            levels = chosen.levels
            if level >= len(levels):
                raise InputError(
                    f"{p}{where} has {len(levels)} resolution level(s); level {level} does not exist: "
                    f"pick 0..{len(levels) - 1}"
                )
            axes = levels[level].axes
            ij = tf.imagej_metadata or {}
            grey = ij.get("mode", "grayscale") == "grayscale"
            if axes == "CYX" and channel is None and grey and not ij.get("slices"):
                # NOTE: tifffile (and scripts built on it) write a plain 3D ImageJ stack as "channels"
                # unless told otherwise; a greyscale one with no slices is a z stack in practice.
                axes = "ZYX"
            base_shape = tuple(int(s) for s in chosen.shape)
            level_shape = tuple(int(s) for s in levels[level].shape)
            spacing, unit = _tiff_spacing(tf, chosen)
            _check_size(p, levels[level], where)
            _check_decodable(p, tf, levels[level], where)
            _refuse_damage(p, warned)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise InputError(
            NOT_A_VOLUME.format(path=p) + f" (the TIFF{where} could not be read: {exc}; the file may be damaged)"
        ) from None

    try:
        reader = _LazyTiff(str(p), level, index, where)
        zarr_arr = reader.open()
        reader.shape, reader.dtype = tuple(zarr_arr.shape), np.dtype(zarr_arr.dtype)
        reader.ndim = len(reader.shape)
        from dask.base import tokenize

        arr = da.from_array(
            reader,
            chunks=_tiff_dask_chunks(zarr_arr.shape, zarr_arr.chunks, zarr_arr.dtype),
            name="tiff-" + tokenize(str(p), p.stat().st_mtime_ns, p.stat().st_size, level, index),
            fancy=False,
            lock=False,
            meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
        )
    except Exception as exc:
        raise InputError(
            NOT_A_VOLUME.format(path=p) + f" (the TIFF{where} could not be opened lazily: {exc})"
        ) from None
    if arr.dtype == np.bool_:
        # NOTE: a bilevel TIFF (1 bit per pixel) is decoded as booleans; its two grey levels are 0 and 1.
        log.warning("%s%s is a bilevel (1-bit) image: reading it as uint8 with the values 0 and 1", p, where)
        arr = arr.astype(np.uint8)

    # A pyramid level is coarser laterally (and sometimes in z): scale the voxel size to it.
    if spacing is not None and level > 0:
        sp_axes = [a for a in "ZYX"]
        scaled = list(spacing)
        for j, letter in enumerate(sp_axes):
            if letter in axes:
                i = axes.index(letter)
                scaled[j] = spacing[j] * base_shape[i] / max(level_shape[i], 1)
        spacing = tuple(scaled)  # type: ignore[assignment]

    try:
        data = check_volume(arr, channel=channel, axes=axes)
    except InputError as exc:
        if not where:
            raise
        raise InputError(f"{p}{where}: {exc}") from None
    return Volume(data=data, spacing=spacing, unit=unit, source=str(p))


def tiff_series(p: str | os.PathLike) -> list[tuple[int, tuple[int, ...], str]]:
    """The image series of a TIFF: ``(index, shape, axes)`` each, in the file's order (nothing is decoded).

    Raises
    ------
    InputError
        When the file cannot be read as a TIFF.
    """
    import tifffile

    p = Path(p)
    warned = _TiffWarnings()
    try:
        with warned, tifffile.TiffFile(p) as tf:
            len(tf.pages)
            _refuse_damage(p, warned)
            return [(i, tuple(int(n) for n in s.shape), str(s.axes)) for i, s in enumerate(tf.series)]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            NOT_A_VOLUME.format(path=p) + f" (the TIFF could not be read: {exc}; the file may be damaged)"
        ) from None


def is_3d_series(shape: tuple[int, ...], axes: str) -> bool:
    """Whether a series of this shape is a stack: at least three axes longer than 1, RGB samples not counted."""
    return sum(1 for n, a in zip(shape, axes) if a != "S" and int(n) > 1) >= 3


def default_series(table: list[tuple[int, tuple[int, ...], str]]) -> int:
    """The series read when none is asked for: the largest 3D one by voxel count (the first of equals), else 0."""
    stacks = [(math.prod(shape), -i, i) for i, shape, axes in table if is_3d_series(shape, axes)]
    return max(stacks)[2] if stacks else 0


def pick_series(p: Path, series_list: Any, series: int | None) -> int:
    """The index of the series to read: ``series`` (checked), or :func:`default_series`, said when there are
    several to choose from."""
    table = [(i, tuple(int(n) for n in s.shape), str(s.axes)) for i, s in enumerate(series_list)]
    n = len(table)
    if series is not None:
        if isinstance(series, bool) or not isinstance(series, (int, np.integer)):
            raise InputError(f"series {series!r} is not a whole number: give e.g. series=0 (CLI: --series 0)")
        series = int(series)
        if not 0 <= series < n:
            raise InputError(
                f"{p} has {n} image series; series {series} does not exist: pick one of {_series_list(table)}"
            )
        return series
    index = default_series(table)
    if n > 1:
        log.warning(
            "%s has %d image series (%s); reading series %d (%s); pass series=N (CLI: --series N) to pick another",
            p.name, n, _series_list(table), index, _shape_words(table[index][1]),
        )
    return index


def _series_list(table: list[tuple[int, tuple[int, ...], str]]) -> str:
    return ", ".join(f"{i} ({_shape_words(shape)})" for i, shape, _ in table)


def _shape_words(shape: tuple[int, ...]) -> str:
    return " x ".join(str(int(n)) for n in shape)


def _series_words(series_list: Any, index: int) -> str:
    """``", series 1 (32 x 96 x 96)"`` for a file of several series, else ``""``: put after the file's name."""
    if len(series_list) < 2:
        return ""
    return f", series {index} ({_shape_words(tuple(series_list[index].shape))})"


def _refuse_damage(p: Path, warned: _TiffWarnings) -> None:
    damaged = warned.damage()
    if damaged:
        raise InputError(
            f"{p} is damaged ({damaged}): the file is cut short or overwritten, so its stack is "
            "incomplete; copy it again from its source"
        )


class _TiffWarnings(logging.Handler):
    """Collects what tifffile logs while a file is opened: a broken chain of pages is only logged there."""

    #: Words in tifffile's warnings that mean the file itself is damaged (not merely unusual metadata).
    DAMAGE = ("invalid page offset", "invalid offset to first page", "corrupted", "truncated",
              "circular reference")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a broken log record must not break the reading
            pass

    def __enter__(self) -> _TiffWarnings:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("tifffile").removeHandler(self)

    def damage(self) -> str | None:
        """The first warning that says the file is damaged, or None."""
        for m in self.messages:
            if any(w in m.lower() for w in self.DAMAGE):
                return m.split("> ", 1)[-1]
        return None


#: Pages whose data positions are checked against the file size (a bound on the time spent on a huge stack).
_MAX_PAGES_CHECKED = 100_000


def _check_size(p: Path, level: Any, where: str = "") -> None:
    """Refuse a TIFF whose declared image size does not fit the file (size tags altered, or the file cut short).

    For uncompressed data the declared bytes (shape x item size; packed rows of whole bytes for samples of 1, 2,
    4 or 12 bits, as in a bilevel image) must be stored in the file, and every strip or tile must lie inside it;
    compressed data cannot be much larger than the file either. Nothing is read but the page headers tifffile
    has already parsed. ``where`` names the series after the file's name (see :func:`_series_words`).
    """
    size = p.stat().st_size
    shape = tuple(int(s) for s in level.shape)
    itemsize = np.dtype(level.dtype).itemsize
    page = getattr(level, "keyframe", None)
    bits = int(getattr(page, "bitspersample", 8) or 8) if page is not None else 8
    if bits % 8 and len(shape) >= 2:
        # NOTE: tifffile decodes 1, 2, 4 or 12-bit samples into whole bytes; the file packs them, in rows of whole
        # bytes.
        declared = math.prod(shape[:-1]) * -(-shape[-1] * bits // 8)
    else:
        declared = math.prod(shape) * itemsize
    compressed = page is not None and int(getattr(page, "compression", 1)) != 1
    # NOTE: deflate/zstd of a constant region can shrink it a thousandfold or more; a millionfold is not an image.
    limit = size * 10**6 if compressed else size
    if declared > limit:
        raise InputError(
            f"{p}{where} declares an image of {' x '.join(str(s) for s in shape)} pixels ({_human(declared)}"
            f"{' compressed' if compressed else ''}), which does not fit the file ({_human(size)}): the file is "
            "damaged (cut short, or its size tags were altered); copy it again from its source"
        )
    end = 0
    stored = 0
    offset = getattr(level, "dataoffset", None)
    if offset is not None and not compressed:
        end, stored = int(offset) + declared, declared
    else:
        for i, pg in enumerate(getattr(level, "pages", ()) or ()):
            if i >= _MAX_PAGES_CHECKED:
                return
            if pg is None:
                continue
            for o, c in zip(pg.dataoffsets, pg.databytecounts):
                if c:
                    end = max(end, int(o) + int(c))
                    stored += int(c)
    if end > size or (not compressed and offset is None and 0 < stored < declared):
        raise InputError(
            f"{p}{where} is cut short: its image data runs to "
            f"byte {max(end, stored)}, but the file ends at byte {size} (an interrupted copy or download?); copy "
            "it again from its source"
        )


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1000
    return f"{n} bytes"  # pragma: no cover


def _check_decodable(p: Path, tf: Any, level: Any, where: str = "") -> None:
    """Decode the first strip or tile of a compressed TIFF now, so that a missing codec is said at opening.

    tifffile decodes zlib/deflate, LZMA and PackBits itself; LZW, JPEG, zstd, WebP, JPEG 2000 and others
    need the ``imagecodecs`` package, and without it every read of the data fails (only once it is read,
    which for a lazy volume is in the middle of a reconstruction).

    Raises
    ------
    InputError
        When the data cannot be decoded: naming the compression, and ``pip install imagecodecs`` when that
        package is missing.
    """
    page = getattr(level, "keyframe", None)
    if page is None or int(getattr(page, "compression", 1)) == 1:
        return  # uncompressed
    counts = tuple(int(c) for c in page.databytecounts)
    first = next((i for i, c in enumerate(counts) if c > 0), None)
    if first is None:
        return  # no data stored (all segments empty): nothing to decode
    try:
        fh = tf.filehandle
        fh.seek(int(page.dataoffsets[first]))
        page.decode(fh.read(counts[first]), first, jpegtables=getattr(page, "jpegtables", None))
    except Exception as exc:
        name = _compression_name(page.compression)
        segment = "tile" if page.is_tiled else "strip"
        try:
            import imagecodecs  # noqa: F401
        except ImportError:
            raise InputError(
                f"{p}{where} is compressed with {name}, which needs the imagecodecs package to be read ({exc}): "
                "install it with `pip install imagecodecs` and open the file again (or save it uncompressed)"
            ) from None
        raise InputError(
            f"{p}{where} is compressed with {name} and its first {segment} cannot be decoded ({exc}): the file may "
            "be damaged, or use a variant of the compression that is not supported; save it uncompressed"
        ) from None


def _compression_name(value: Any) -> str:
    name = getattr(value, "name", None) or str(value)
    names = {"LZW": "LZW", "JPEG": "JPEG", "ADOBE_DEFLATE": "Deflate", "DEFLATE": "Deflate", "ZSTD": "Zstandard"}
    return names.get(name, name.replace("_", " "))


class _LazyTiff(LazyArray):
    """Array-like view of one level of one TIFF series, read through tifffile's zarr store on demand.

    Unlike the store itself (which holds an open file and a lock) it can be pickled, so dask graphs
    built on it can be sent to ``dask.distributed`` workers; each process opens the file once.
    """

    def __init__(self, path: str, level: int, series: int = 0, where: str = "") -> None:
        self.path = path
        self.level = level
        self.series = series
        self.where = where  # the series, named after the path where the file has several (_series_words)
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype("uint8")
        self.ndim = 0
        self._arr: Any = None

    def _open(self) -> Any:
        import tifffile
        import zarr

        store = tifffile.imread(self.path, aszarr=True, series=self.series, level=self.level)
        return zarr.open(store, mode="r")

    def _damaged(self, key: Any, exc: Exception) -> InputError:
        # TiffFileError, zlib.error, IndexError, ValueError, struct.error ...
        return InputError(
            f"{self.path}{self.where} cannot be read{_where(key)} ({type(exc).__name__}: {exc}): the file is damaged "
            "(cut short or overwritten); copy it again from its source"
        )


def _where(key: Any) -> str:
    """' in plane(s) ...' for a read of a range along the first axis, else ''."""
    first = key[0] if isinstance(key, tuple) and key else key
    if isinstance(first, slice) and first.start is not None and first.stop is not None:
        if first.stop - first.start == 1:
            return f" in page {first.start}"
        return f" in pages {first.start}..{first.stop - 1}"
    if isinstance(first, (int, np.integer)):
        return f" in page {int(first)}"
    return ""


def _tiff_dask_chunks(
    shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any
) -> tuple[int, ...]:
    """Dask chunks for a TIFF zarr view: whole pages where they fit in ~128 MB, else page tiles."""
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    if len(shape) < 2:
        return chunks
    itemsize = np.dtype(dtype).itemsize
    # Spatial plane = last two axes (plus RGB samples for YXS pages, which tifffile keeps whole).
    lead = len(shape) - 2
    if len(shape) >= 3 and chunks[-1] == shape[-1] and shape[-1] in (3, 4) and chunks[-2] != shape[-2]:
        lead = len(shape) - 3
    plane_bytes = int(np.prod(shape[lead:], dtype=np.int64)) * itemsize
    if plane_bytes <= 128 * 2**20:
        return tuple(1 for _ in shape[:lead]) + shape[lead:]
    # Very large pages: keep tiles but grow them to about 2048 px.
    out = list(chunks)
    for i in range(lead, len(shape)):
        if chunks[i] < shape[i]:
            out[i] = min(shape[i], max(chunks[i], (2048 // chunks[i]) * chunks[i]))
    return tuple(out)


def _tiff_spacing(tf: Any, series: Any) -> tuple[Spacing | None, str]:
    """Voxel size (z, y, x) of a TIFF series from OME or ImageJ metadata, in nm when the unit is known."""
    if tf.is_ome and tf.ome_metadata:
        try:
            got = _ome_tiff_spacing(tf.ome_metadata, _first_page(series), _series_index(tf, series))
        except Exception as exc:  # malformed XML: carry on without voxel size
            log.warning("could not read the OME-XML voxel size: %s", exc)
            got = None
        if got is not None:
            return got
    if tf.is_imagej:
        md = tf.imagej_metadata or {}
        page = tf.pages.first if hasattr(tf.pages, "first") else tf.pages[0]
        xy = _page_resolution(page)
        z = md.get("spacing")
        unit = md.get("unit")
        if z is None:
            if xy is not None:
                log.warning(
                    "%s has a lateral pixel size but no z spacing; give the voxel size explicitly",
                    tf.filehandle.path,
                )
            return None, "nm"
        if xy is None:
            # ImageJ without calibration of x/y: pixel width 1 in the same unit.
            xy = (1.0, 1.0)
        return spacing_in_nm((float(z), xy[0], xy[1]), unit)
    return None, "nm"


def _page_resolution(page: Any) -> tuple[float, float] | None:
    """Pixel size (y, x) = 1 / (Y|X)Resolution, or None when it is absent or the default 1."""
    tags = page.tags
    out = []
    for name in ("YResolution", "XResolution"):
        tag = tags.get(name)
        if tag is None:
            return None
        value = tag.value
        try:
            res = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ZeroDivisionError):
            return None
        if not res or not math.isfinite(res):
            return None
        out.append(1.0 / res)
    if out == [1.0, 1.0]:
        return None
    return out[0], out[1]


def _first_page(series: Any) -> int | None:
    try:
        return int(series.pages[0].index)
    except Exception:  # a series without pages, or a page object without an index
        return None


def _series_index(tf: Any, series: Any) -> int:
    for i, s in enumerate(tf.series):
        if s is series:
            return i
    return 0


def _ome_tiff_spacing(xml: str, first_page: int | None = 0, index: int = 0) -> tuple[Spacing | None, str] | None:
    """PhysicalSizeZ/Y/X of the OME image of a series, converted to nm (default unit micrometre).

    The image is the one whose ``TiffData`` starts at the series' first page (``first_page``); when no single
    image does, the ``index``-th image.
    """
    import tifffile

    ome = tifffile.xml2dict(xml).get("OME", {})
    images = ome.get("Image")
    images = images if isinstance(images, list) else [images]
    images = [im for im in images if isinstance(im, dict)]
    starting = [im for im in images if first_page is not None and _first_ifd(im) == first_page]
    if len(starting) == 1:
        image = starting[0]
    elif 0 <= index < len(images):
        image = images[index]
    else:
        return None
    pixels = image.get("Pixels", {})
    values = []
    for ax in "ZYX":
        size = pixels.get(f"PhysicalSize{ax}")
        if size is None:
            return None
        unit = pixels.get(f"PhysicalSize{ax}Unit", "\u00b5m")  # OME default is micrometre
        norm, to_nm = normalise_unit(unit)
        if to_nm is None:
            log.warning("unknown OME unit %r: ignoring the voxel size", unit)
            return None
        values.append(float(size) * to_nm)
    return spacing_in_nm(tuple(values), "nm")  # type: ignore[arg-type]


def _first_ifd(image: dict) -> int | None:
    """The first page (IFD) an OME image's pixels are stored in, or None when it does not say."""
    pixels = image.get("Pixels")
    data = pixels.get("TiffData") if isinstance(pixels, dict) else None
    data = data if isinstance(data, list) else [data]
    ifds = []
    for d in data:
        if isinstance(d, dict):
            try:
                ifds.append(int(d.get("IFD", 0)))
            except (TypeError, ValueError):
                pass
    return min(ifds) if ifds else None
