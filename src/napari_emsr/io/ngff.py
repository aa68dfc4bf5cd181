"""OME-NGFF image metadata (``multiscales``), read and written through the yaozarrs model of the spec.

Reading validates the group attributes against the NGFF 0.4 model (zarr v2, ``.zattrs``) or 0.5 (zarr v3,
``zarr.json`` attributes under ``"ome"``) and describes the result as a plain :class:`NgffImage`: axes, and
for every resolution level its path, scale and translation with the multiscale-wide transformations folded
in. Files in the wild often deviate slightly; a few known deviations (NGFF 0.1-0.3 layouts, axes without a
``type``, a translation listed before the scale) are repaired with a warning, and anything the model still
rejects raises :class:`~napari_emsr.errors.InputError` that says what is wrong.

Writing builds the NGFF 0.4 (zarr v2: the attributes are the document) or 0.5 (zarr v3: the document goes
under ``"ome"``) model of our own exports and serialises it.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

log = logging.getLogger(__name__)

#: Axis type by axis name, for metadata that leaves the type out.
_TYPE_BY_NAME = {"x": "space", "y": "space", "z": "space", "t": "time", "c": "channel"}


@dataclass(frozen=True)
class NgffAxis:
    """One axis of an NGFF image: name (lower case), type (``space``, ``time``, ``channel`` or other), unit."""

    name: str
    type: str | None
    unit: str | None


@dataclass(frozen=True)
class NgffLevel:
    """One resolution level: the array's path in the group and its physical transform per axis."""

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...] | None


@dataclass(frozen=True)
class NgffImage:
    """The first multiscale image of a group, as napari-emsr uses it.

    Attributes
    ----------
    version : str
        NGFF version the metadata was validated as (``"0.4"`` or ``"0.5"``).
    name : str or None
        The multiscale's name.
    axes : tuple of NgffAxis
        The axes, in array order.
    levels : tuple of NgffLevel
        Resolution levels, finest first.
    repairs : tuple of str
        What had to be repaired to read the metadata (empty for metadata that follows the spec).
    """

    version: str
    name: str | None
    axes: tuple[NgffAxis, ...]
    levels: tuple[NgffLevel, ...]
    repairs: tuple[str, ...] = ()


# ---- reading --------------------------------------------------------------------------------------


def find_multiscales(attrs: Mapping[str, Any]) -> tuple[dict | None, str]:
    """The NGFF document holding ``multiscales`` in group attributes, and where it is.

    Returns
    -------
    tuple
        ``(document, "0.5")`` for the ``"ome"`` key of a zarr v3 group, ``(attrs, "0.4")`` for attributes
        with a top-level ``multiscales`` (NGFF 0.4 and earlier), ``(None, "")`` when there is none.
    """
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and "multiscales" in ome:
        return dict(ome), "0.5"
    if "multiscales" in attrs:
        return dict(attrs), "0.4"
    return None, ""


def parse_image(doc: Mapping[str, Any], version: str, ndim_of: Callable[[str], int | None]) -> NgffImage:
    """Validate an NGFF image document with the model and describe its first multiscale.

    Parameters
    ----------
    doc : mapping
        The document from :func:`find_multiscales`.
    version : str
        ``"0.4"`` or ``"0.5"``, as :func:`find_multiscales` says.
    ndim_of : callable
        ``ndim_of(path)``: number of dimensions of the array at ``path`` in the group (None when it cannot
        be opened); asked only for metadata without axes (NGFF 0.1/0.2).

    Returns
    -------
    NgffImage

    Raises
    ------
    InputError
        When the model rejects the metadata even after the known repairs.
    """
    # NOTE: the model raises pydantic's ValidationError, a ValueError; catching that keeps pydantic an
    # indirect dependency.
    model = _image_model(version)
    try:
        image = _validate(model, doc)
        repairs: list[str] = []
    except ValueError as first:
        try:
            fixed, repairs = _repair(doc, version, ndim_of)
        except Exception as exc:  # metadata of shapes no repair foresaw: report what the model found
            log.debug("the NGFF repairs failed on this metadata: %r", exc)
            fixed, repairs = doc, []
        if not repairs:
            raise _invalid(first, version) from None
        try:
            image = _validate(model, fixed)
        except ValueError as err:
            raise _invalid(err, version) from None
        log.warning(
            "the OME-Zarr metadata does not follow NGFF %s; read it after repairing: %s", version, "; ".join(repairs)
        )
    return _describe(image.multiscales[0], version, tuple(repairs))


def _image_model(version: str) -> Any:
    from yaozarrs import v04, v05

    return v05.Image if version == "0.5" else v04.Image


def _validate(model: Any, doc: Mapping[str, Any]) -> Any:
    # NOTE: the model warns about non-standard unit names ("micron", "nm"); the unit table reads those, so the
    # warnings are only worth a debug line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = model.model_validate(doc)
    for w in caught:
        log.debug("NGFF model: %s", w.message)
    return image


def _invalid(err: Any, version: str) -> InputError:
    """An InputError that names the first few problems the model found (never a raw pydantic dump)."""
    if not hasattr(err, "errors"):
        return InputError(f"the OME-Zarr metadata ('multiscales') does not follow NGFF {version}: {err}")
    problems = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("custom", "space", "time", "channel"))
        msg = " ".join(str(e.get("msg", "")).split())
        problems.append(f"{loc}: {msg}" if loc else msg)
    more = f" (and {err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return InputError(
        f"the OME-Zarr metadata ('multiscales') does not follow NGFF {version}: {'; '.join(problems)}{more}. "
        "Fix the metadata (e.g. validate it with `yaozarrs validate`), or open the array of one level "
        "directly (its folder inside the store)"
    )


def _repair(doc: Mapping[str, Any], version: str, ndim_of: Callable[[str], int | None]) -> tuple[dict, list[str]]:
    """Repair known deviations from NGFF (earlier versions, missing axis types); returns (document, what)."""
    fixed = copy.deepcopy(dict(doc))
    repairs: list[str] = []
    if version == "0.5" and fixed.get("version") != "0.5":
        repairs.append(f"version {fixed.get('version')!r} read as '0.5'")
        fixed["version"] = "0.5"
    multiscales = fixed.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        return fixed, []
    for ms in multiscales:
        if not isinstance(ms, dict):
            continue
        if version == "0.4" and ms.get("version", "0.4") != "0.4":
            repairs.append(f"version {ms.get('version')!r} read as '0.4'")
            ms["version"] = "0.4"
        datasets = ms.get("datasets")
        if not isinstance(datasets, list):
            continue
        axes = ms.get("axes")
        if axes is None:
            ndim = _first_ndim(datasets, ndim_of)
            if ndim is None or not 2 <= ndim <= 5:
                continue
            axes = ["t", "c", "z", "y", "x"][-ndim:]
            repairs.append(f"no axes: taken as {''.join(axes)}")
        if isinstance(axes, list):
            new_axes = []
            for ax in axes:
                if isinstance(ax, str):
                    ax = {"name": ax}
                    if "axes given as names" not in repairs:
                        repairs.append("axes given as names")
                if isinstance(ax, dict) and not ax.get("type") and str(ax.get("name", "")).lower() in _TYPE_BY_NAME:
                    ax = {**ax, "type": _TYPE_BY_NAME[str(ax["name"]).lower()]}
                    repairs.append(f"axis {ax['name']!r} without a type taken as {ax['type']}")
                new_axes.append(ax)
            ms["axes"] = new_axes
        n_axes = len(ms["axes"]) if isinstance(ms.get("axes"), list) else None
        top = ms.get("coordinateTransformations")
        if isinstance(top, list):
            kept = _fix_transforms(top, n_axes, "the multiscale", repairs)
            if kept:
                ms["coordinateTransformations"] = kept
            else:
                del ms["coordinateTransformations"]
        for i, ds in enumerate(datasets):
            if not isinstance(ds, dict):
                continue
            cts = ds.get("coordinateTransformations")
            if cts is None and n_axes:
                ds["coordinateTransformations"] = [{"type": "scale", "scale": [1.0] * n_axes}]
                repairs.append(f"dataset {i} without coordinateTransformations taken as unscaled")
            elif isinstance(cts, list):
                kept = _fix_transforms(cts, n_axes, f"dataset {i}", repairs)
                if not any(isinstance(ct, dict) and ct.get("type") == "scale" for ct in kept) and n_axes:
                    kept.insert(0, {"type": "scale", "scale": [1.0] * n_axes})
                    repairs.append(f"dataset {i} without a usable scale taken as unscaled (voxel size unknown)")
                    # NOTE: without units a unit scale means "no voxel size stated" to the reader, not 1 nm.
                    ms["axes"] = [{k: v for k, v in ax.items() if k != "unit"} if isinstance(ax, dict) else ax
                                  for ax in ms.get("axes", [])]
                ds["coordinateTransformations"] = kept
    return fixed, repairs


def _fix_transforms(cts: list, n_axes: int | None, where: str, repairs: list[str]) -> list:
    """Transformations without identities, scale first, and without entries of the wrong length (noted)."""
    kept = []
    for ct in cts:
        if isinstance(ct, dict) and ct.get("type") == "identity":
            repairs.append(f"{where}: an identity transformation dropped")
            continue
        kind = ct.get("type") if isinstance(ct, dict) else None
        values = ct.get(kind) if isinstance(kind, str) else None
        if n_axes and isinstance(values, list) and len(values) != n_axes:
            repairs.append(f"{where}: a {ct.get('type')} of {len(values)} values for {n_axes} axes ignored")
            continue
        kept.append(ct)
    ordered = sorted(kept, key=lambda ct: 0 if isinstance(ct, dict) and ct.get("type") == "scale" else 1)
    if ordered != kept:
        repairs.append(f"{where}: transformations put in the order scale, translation")
    return ordered


def _first_ndim(datasets: list, ndim_of: Callable[[str], int | None]) -> int | None:
    for ds in datasets:
        if isinstance(ds, dict) and isinstance(ds.get("path"), str):
            return ndim_of(ds["path"])
    return None


def _describe(ms: Any, version: str, repairs: tuple[str, ...]) -> NgffImage:
    """Fold the multiscale-wide transformations into every level's scale and translation."""
    axes = tuple(
        NgffAxis(name=str(ax.name).lower(), type=getattr(ax, "type", None), unit=getattr(ax, "unit", None))
        for ax in ms.axes
    )
    g_scale, g_trans = _transforms(ms.coordinateTransformations or [], len(axes))
    levels = []
    for ds in ms.datasets:
        scale, trans = _transforms(ds.coordinateTransformations, len(axes))
        # x = g_scale * (scale * i + trans) + g_trans
        total_scale = tuple(g * s for g, s in zip(g_scale, scale))
        total_trans = None
        if trans is not None or g_trans is not None:
            t = trans or (0.0,) * len(axes)
            gt = g_trans or (0.0,) * len(axes)
            total_trans = tuple(g * v + w for g, v, w in zip(g_scale, t, gt))
        levels.append(NgffLevel(path=str(ds.path), scale=total_scale, translation=total_trans))
    return NgffImage(version=version, name=ms.name, axes=axes, levels=tuple(levels), repairs=repairs)


def _transforms(cts: Sequence[Any], ndim: int) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
    scale = (1.0,) * ndim
    trans = None
    for ct in cts:
        if ct.type == "scale":
            scale = tuple(float(v) for v in ct.scale)
        elif ct.type == "translation":
            trans = tuple(float(v) for v in ct.translation)
    return scale, trans


# ---- writing --------------------------------------------------------------------------------------


def image_attrs(
    name: str,
    levels: Sequence[tuple[str, Sequence[float], Sequence[float] | None]],
    unit: str | None,
    *,
    downscaling: str = "mean",
    metadata: Mapping[str, Any] | None = None,
    version: str = "0.4",
) -> dict[str, Any]:
    """The NGFF group attributes of a (z, y, x) image pyramid, built and serialised by the model.

    Parameters
    ----------
    name : str
        Name of the multiscale image.
    levels : sequence of (path, scale, translation)
        One entry per level, finest first; ``translation`` may be None.
    unit : str or None
        NGFF unit of the spatial axes (e.g. ``"nanometer"``), None to leave it out.
    downscaling : str
        The multiscale's ``type``: how the coarser levels were made.
    metadata : mapping, optional
        The multiscale's free-form ``metadata``.
    version : str
        ``"0.4"`` (zarr v2 group attributes) or ``"0.5"`` (zarr v3 group attributes).

    Returns
    -------
    dict
        JSON-ready attributes: ``{"multiscales": [...]}`` for 0.4, ``{"ome": {"version": "0.5",
        "multiscales": [...]}}`` for 0.5.
    """
    if version not in ("0.4", "0.5"):
        raise ValueError(f"NGFF version {version!r}: napari-emsr writes 0.4 or 0.5")
    from yaozarrs import v04, v05

    spec = v05 if version == "0.5" else v04
    datasets = []
    for path, scale, translation in levels:
        cts: list[Any] = [spec.ScaleTransformation(scale=[float(v) for v in scale])]
        if translation is not None:
            cts.append(spec.TranslationTransformation(translation=[float(v) for v in translation]))
        datasets.append(spec.Dataset(path=path, coordinateTransformations=cts))
    image = spec.Image(
        multiscales=[
            spec.Multiscale(
                name=name,
                axes=[spec.SpaceAxis(name=ax, type="space", unit=unit) for ax in "zyx"],
                datasets=datasets,
                type=downscaling,
                metadata=dict(metadata or {}),
            )
        ]
    )
    doc = image.model_dump(mode="json", exclude_none=True)
    return {"ome": {"version": "0.5", **doc}} if version == "0.5" else doc
