"""How a paired model is applied: lateral super-resolution of a whole LR volume, plane by plane, lazily.

``lateral(volume, model)`` computes nothing: it returns a dask array (z, s*y, s*x) in the input dtype whose
chunks are bands of rows of single xy planes. A chunk reads the LR rows it needs (with a margin for the
interpolation's prefilter and the network's context), interpolates them onto the HR pixel grid (cubic
B-spline, the interpolation the model was trained with: HR pixel ``j``'s centre at LR ``(j + 0.5) / s - 0.5``),
restores them through the model's one predict path (tiles, blending, out-of-memory retries, stopping: the
engine of :mod:`napari_emsr.engine`) and casts to the input dtype. ``enhance=True`` applies the model at the same
resolution (denoising and sharpening HR data, EMSR's enhancer, Khateri et al.). :func:`export_lateral` writes it
chunk by
chunk (TIFF or OME-Zarr, bounded memory, resumable zarr) with the voxel size divided by ``s`` laterally.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...engine import Engine
from ...errors import InputError
from ...interpolation import interpolate_axis
from ...outputs import export_fingerprint
from .. import Application
from .registration import hr_positions

#: Output pixels per chunk (a band of rows of one plane) at most.
CHUNK_PIXELS = 8_000_000
#: Output rows of context restored above and below a band (cropped after).
MARGIN = 32
#: LR rows and columns read beyond what the interpolation needs (its prefilter sees this far).
PREFILTER_MARGIN = 8


def _out_size(n: int, factor: float) -> int:
    return max(1, int(math.floor(n * factor + 0.5)))


def check_lateral_model(model, volume=None) -> None:
    """A model made by the paired method, valid, and (with ``volume``) trained on this pixel type."""
    model.validate()
    if model.config.get("method") != "paired":
        raise InputError(
            f"this model was trained by method {model.config.get('method')!r}, which reconstructs along z: apply it "
            "with `emsr apply` without --enhance (lateral super-resolution needs a model of method paired)"
        )
    trained = model.config.get("dtype")
    if volume is not None and trained and np.dtype(trained) != np.dtype(volume.dtype):
        raise InputError(
            f"the model was trained on {trained} images and the input is {volume.dtype}: convert the input to "
            f"{trained}, or train a model on {volume.dtype} images"
        )


class _LateralEngine(Engine):
    """A chunk of the lateral output: a band of rows of one or more xy planes."""

    def __init__(self, source, model, factor, device, tile, overlap, batch, margin, out_dtype, name=None, stop=None):
        super().__init__(source, model, factor, 3, "xy", device, tile, overlap, batch, margin, out_dtype, name=name,
                         stop=stop)
        _, ny, nx = source.shape
        self.out_shape = (_out_size(ny, factor), _out_size(nx, factor))

    def block(self, z0: int, z1: int, y0: int, y1: int) -> np.ndarray:
        """Output planes ``z0:z1``, rows ``y0:y1``, every column."""
        self.check_stop()
        s = self.factor
        _, ny, nx = self.source.shape
        ho, wo = self.out_shape
        ey0, ey1 = max(0, y0 - self.margin), min(ho, y1 + self.margin)
        pos_y = hr_positions(ho, s)[ey0:ey1]
        r0 = max(0, int(math.floor(pos_y.min())) - PREFILTER_MARGIN)
        r1 = min(ny, int(math.ceil(pos_y.max())) + PREFILTER_MARGIN + 1)
        a = self.model.norm.apply(self.read(self.source[z0:z1, r0:r1, :], z0))  # NaN or inf: InputError
        if s != 1.0:
            a = interpolate_axis(a, pos_y - r0, order=3, axis=1)
            a = interpolate_axis(a, hr_positions(wo, s), order=3, axis=2)
        out = self.restore(np.ascontiguousarray(a, np.float32))
        out = out[:, y0 - ey0 : y0 - ey0 + (y1 - y0), :]
        return self._cast(self.model.norm.invert(out))


def _chunk(engine: _LateralEngine, block_info=None) -> np.ndarray:
    (z0, z1), (y0, y1), _ = block_info[None]["array-location"]
    return engine.block(int(z0), int(z1), int(y0), int(y1))


def lateral(volume, model, *, enhance: bool = False, device: str = "auto", rows: int | None = None,
            tile: int | None = None, overlap: int | None = None, batch: int | None = None, margin: int = MARGIN,
            stop: Callable[[], bool] | None = None):
    """The volume's xy planes super-resolved by a paired model, as a lazy dask array in the input dtype.

    Parameters
    ----------
    volume : Volume or array
        The LR volume (z, y, x) (a 2D image is one plane).
    model : EMSRModel or path
        A model of method ``paired``.
    enhance : bool
        Apply at the same resolution (factor 1) instead of the model's factor.
    rows : int, optional
        Output rows per chunk (default: whole planes up to :data:`CHUNK_PIXELS` pixels).
    tile, overlap, batch : int, optional
        As for :func:`napari_emsr.reconstruct.reconstruct`.
    margin : int
        Output rows of context restored above and below each band.
    stop : callable, optional
        Called before each band and each batch of planes; a true answer stops with
        :class:`napari_emsr.engine.Stopped`.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    from ...io import finite_check
    from ...model import TILE, TILE_OVERLAP, EMSRModel
    from .pairs import as_stack

    vol = as_stack(volume)
    if isinstance(model, (str, Path)):
        model = EMSRModel.load(model)
    check_lateral_model(model, vol)
    finite_check(vol.data)
    f = 1.0 if enhance else float(model.factor)
    src = vol.data
    nz, ny, nx = src.shape
    ho, wo = _out_size(ny, f), _out_size(nx, f)
    cy = int(rows) if rows else (ho if ho * wo <= CHUNK_PIXELS else max(16, CHUNK_PIXELS // wo))
    cy = max(1, min(ho, cy))
    eng = _LateralEngine(src, model, f, device, int(tile or TILE), int(TILE_OVERLAP if overlap is None else overlap),
                         int(batch or 0), int(margin), src.dtype, name=getattr(vol, "source", None), stop=stop)
    token = tokenize(id(eng), str(getattr(src, "name", id(src))), f, cy)
    engine = dask.delayed(eng, name=f"emsr-engine-{token}", traverse=False)
    return da.map_blocks(
        _chunk, engine, name=f"emsr-lateral-{token}",
        chunks=((1,) * nz, tuple(min(cy, ho - s) for s in range(0, ho, cy)), (wo,)),
        dtype=src.dtype, meta=np.empty((0, 0, 0), src.dtype),
    )


def lateral_spacing(volume, factor: float):
    """Voxel size of the output: the lateral spacing divided by ``factor``, z unchanged (None when unknown)."""
    sp = getattr(volume, "spacing", None)
    if not sp:
        return None
    return (float(sp[0]), float(sp[1]) / factor, float(sp[2]) / factor)


def lateral_translation(volume, factor: float):
    """Position of the output's first voxel: HR pixel 0's centre lies at LR ``0.5 / s - 0.5`` (None when the
    input has no translation or spacing)."""
    tr, sp = getattr(volume, "translation", None), getattr(volume, "spacing", None)
    if not tr or not sp:
        return None
    d = 0.5 / factor - 0.5
    return (float(tr[0]), float(tr[1]) + d * float(sp[1]), float(tr[2]) + d * float(sp[2]))


def lateral_fingerprint(volume, model, enhance: bool = False, **_) -> dict[str, str]:
    """What produces a lateral export (:func:`~napari_emsr.outputs.export_fingerprint` with the planes named
    ``lateral xF``), stored with it: a resume, or the CLI's "nothing to do", compares against it."""
    f = 1.0 if enhance else float(model.factor)
    return export_fingerprint(volume, model, f"lateral x{f:g}")


def export_lateral(volume, model, path, *, enhance: bool = False, device: str = "auto", overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, stop: Callable[[], bool] | None = None,
                   **kwargs) -> Path:
    """Write :func:`lateral` to ``path`` (.tif/.tiff or .zarr/.ome.zarr) chunk by chunk, bounded memory.

    The voxel size is divided by the factor along y and x; a zarr output resumes when run again (a different
    input or model is refused). ``stop()`` is checked before each band and each batch of planes.
    """
    from ...io import same_place, write_volume
    from ...model import EMSRModel
    from .pairs import as_stack

    source = getattr(volume, "source", None)
    if source and Path(str(source)).exists() and same_place(path, str(source)):
        raise InputError(f"{path} is the input volume ({source}): write the result elsewhere (nothing was written)")
    if isinstance(model, (str, Path)):
        model = EMSRModel.load(model)
    vol = as_stack(volume)
    arr = lateral(vol, model, enhance=enhance, device=device, stop=stop, **kwargs)
    f = 1.0 if enhance else float(model.factor)
    fingerprint = lateral_fingerprint(vol, model, enhance)
    write = functools.partial(write_volume, spacing=lateral_spacing(vol, f), unit=getattr(vol, "unit", "nm"),
                              overwrite=overwrite, progress=progress, translation=lateral_translation(vol, f),
                              fingerprint=fingerprint)
    return write(path, arr)


def _open(source):
    from .pairs import open_image

    return open_image(source)


def _summary(volume, model, *, enhance: bool = False, **_) -> tuple[dict, str]:
    f = 1.0 if enhance else float(model.factor)
    what = "enhanced" if enhance else f"xy planes x{f:g}"
    return {"factor": f, "spacing": lateral_spacing(volume, f), "mode": "enhance" if enhance else "lateral"}, what


def _check(model, volume=None) -> None:
    if isinstance(model, str):
        raise InputError(f"{model} is not a model: lateral super-resolution needs a model of method paired "
                         "(emsr train --method paired)")
    check_lateral_model(model, volume)


#: The paired method's application: every xy plane of an LR volume made finer (or enhanced), z unchanged.
LATERAL = Application(kind="lateral", lazy=lateral, export=export_lateral, fingerprint=lateral_fingerprint,
                      check=_check, summary=_summary, open=_open, options=("enhance",), cluster=False)
