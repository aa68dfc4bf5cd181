"""napari layers <-> :class:`napari_emsr.io.Volume`: scale, translate, units and axis labels, both ways.

The one place where the plugin turns a volume into napari layer data and a napari layer back into a volume:
the reader, the sample data, the writer and the panel all go through it, so a stack, its reconstruction and
the panel's preview planes land where the geometry contract says (a layer of the input, scale (F*s, s, s),
and one of the output, scale (s, s, s), with the same translate, overlay exactly).

Importing this module is cheap: it imports neither torch, napari nor Qt (napari objects are only read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: napari's (z, y, x) axis labels for every 3D layer the plugin adds.
AXIS_LABELS = ("z", "y", "x")
#: A napari layer data tuple: (data, layer keyword arguments, layer type).
LayerData = tuple[Any, dict, str]

# NOTE: napari reports pint's long names ("nanometer"); files and the panel use the short form where there is one.
_SHORT_UNITS = {"nanometer": "nm", "micrometer": "µm", "millimeter": "mm", "angstrom": "Å", "pixel": "px"}


def short_unit(unit: Any) -> str | None:
    """The short form of a length unit as napari or pint names it ("nanometer" -> "nm"); None for no unit."""
    if unit is None or str(unit) == "":
        return None
    return _SHORT_UNITS.get(str(unit), str(unit))


def is_known_unit(unit: str) -> bool:
    """Whether napari (through pint) understands ``unit``; an unknown one is kept in the layer metadata only."""
    try:
        import pint

        pint.get_application_registry().Unit(unit)
    except Exception:
        return False
    return True


def contrast_limits_for(data: Any) -> tuple[float, float]:
    """Contrast limits from one middle z slice (cheap on a lazy array), falling back to the dtype's range.

    Parameters
    ----------
    data : array-like
        A (z, y, x) array, numpy or dask.

    Returns
    -------
    tuple of float
        (low, high) with high > low.
    """
    plane = np.asarray(data[data.shape[0] // 2])
    if plane.size:
        lo, hi = (float(v) for v in np.percentile(plane, (0.1, 99.9)))
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            return lo, hi
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def _units(unit: str | None) -> tuple[str, str, str] | None:
    return (unit,) * 3 if unit and is_known_unit(unit) else None


# ------------------------------------------------------------------------------------------------ volume -> layer
def volume_to_layer_data(volume: Any, name: str, **extra: Any) -> LayerData:
    """The napari layer data tuple of a :class:`napari_emsr.io.Volume`, with scale = voxel size.

    A volume with a pyramid (``volume.levels`` longer than one) becomes a multiscale layer (level 0 first);
    ``volume.translation`` becomes the layer's ``translate``.

    Parameters
    ----------
    volume : napari_emsr.io.Volume
        The volume (lazy data, spacing (z, y, x) or None, unit, source, translation, levels).
    name : str
        Layer name.
    **extra
        More layer keyword arguments (they win over the defaults).

    Returns
    -------
    tuple
        ``(data, kwargs, "image")``; ``data`` is a list of arrays for a multiscale layer.
    """
    spacing = tuple(float(s) for s in volume.spacing) if volume.spacing is not None else None
    unit = getattr(volume, "unit", None) or "nm"
    translation = volume.translation
    levels = tuple(volume.levels or (volume.data,))
    multiscale = len(levels) > 1
    metadata = {
        "spacing": spacing,
        "unit": unit,
        "source": str(volume.source) if getattr(volume, "source", None) is not None else None,
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": metadata,
        # NOTE: the smallest level of a pyramid gives the same limits for a fraction of the reading.
        "contrast_limits": contrast_limits_for(levels[-1]),
        "multiscale": multiscale,
        "rgb": False,
        "colormap": "gray",
        "axis_labels": AXIS_LABELS,
    }
    if spacing is not None:
        kwargs["scale"] = spacing
        units = _units(unit)
        if units is not None:
            kwargs["units"] = units
    if translation is not None:
        kwargs["translate"] = tuple(float(t) for t in translation)
    kwargs.update(extra)
    return (list(levels) if multiscale else volume.data), kwargs, "image"


# ------------------------------------------------------------------------------------------------ layer -> volume
def layer_spacing(layer: Any) -> tuple[tuple[float, float, float], str]:
    """Voxel size (z, y, x) and unit of an image layer: its metadata's spacing, else its scale.

    Parameters
    ----------
    layer : napari.layers.Image
        The layer.

    Returns
    -------
    tuple
        ``((z, y, x), unit)``; layers with fewer than 3 dimensions get ones in front.
    """
    meta = layer.metadata or {}
    scale = tuple(float(s) for s in layer.scale)
    spacing = meta.get("spacing") or scale
    spacing = tuple(float(s) for s in spacing)[-3:]
    # NOTE: the scale wins when the user changed it in napari after opening.
    if len(scale) >= 3 and tuple(scale[-3:]) != tuple(spacing) and any(s != 1.0 for s in scale):
        spacing = scale[-3:]
    spacing = (1.0,) * (3 - len(spacing)) + tuple(spacing)
    unit = meta.get("unit")
    if not unit:
        units = getattr(layer, "units", None)
        unit = short_unit(units[-1]) if units else "nm"
    return spacing, unit  # type: ignore[return-value]


def layer_to_volume(layer: Any, spacing: Sequence[float] | None = None, unit: str | None = None) -> Any:
    """An image layer as a :class:`napari_emsr.io.Volume` (level 0 of a multiscale layer), with its translate.

    Parameters
    ----------
    layer : napari.layers.Image
        The layer.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x) to use instead of the layer's (e.g. edited in the panel).
    unit : str, optional
        Unit of ``spacing`` (default: the layer's).

    Returns
    -------
    napari_emsr.io.Volume

    Raises
    ------
    napari_emsr.errors.InputError
        When the layer is RGB or not a single-channel 3D volume.
    """
    from napari_emsr.errors import InputError

    if getattr(layer, "rgb", False):
        raise InputError(
            f"layer {layer.name!r} is an RGB image {tuple(layer.data.shape)}; "
            "napari-emsr needs a single-channel "
            "3D stack (z, y, x): convert it to greyscale first"
        )
    layer_spacing_, layer_unit = layer_spacing(layer)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else layer_spacing_))
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return _with_translation(data, spacing, unit or layer_unit, tuple(float(t) for t in layer.translate[-3:]))


def layer_data_to_volume(data: Any, meta: dict) -> Any:
    """A volume from the ``(data, meta)`` napari hands a writer: ``meta["scale"]`` is the voxel size.

    Parameters
    ----------
    data : array-like
        The layer data, (z, y, x) (a list of levels, finest first, for a multiscale layer).
    meta : dict
        The layer attributes (``scale``, ``translate``, ``units``, ``metadata``, ``multiscale``); the unit
        comes from the metadata the reader set, else from ``units``, else nanometres.

    Returns
    -------
    napari_emsr.io.Volume
    """
    if meta.get("multiscale"):
        data = data[0]  # NOTE: level 0; the OME-Zarr writer builds its own pyramid
    ndim = getattr(data, "ndim", 0)
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0,) * ndim))[-3:]
    unit = short_unit((meta.get("metadata") or {}).get("unit"))
    if unit is None and meta.get("units"):
        unit = short_unit(meta["units"][-1])
    translate = tuple(float(t) for t in (meta.get("translate") or ()))[-3:]
    return _with_translation(data, scale, unit or "nm", translate)


def _with_translation(data: Any, spacing: tuple[float, ...], unit: str, translate: tuple[float, ...]) -> Any:
    """``as_volume(data, spacing, unit)`` with the translate (in ``unit``) as the volume's translation."""
    from napari_emsr.io import as_volume

    volume = as_volume(data, spacing=spacing, unit=unit)
    if len(translate) == 3 and any(translate):
        import dataclasses

        # NOTE: as_volume may convert the spacing to nm; the translate is in the layer's unit, so it follows.
        to_volume_unit = float(volume.spacing[2]) / float(spacing[2]) if volume.spacing is not None else 1.0
        volume = dataclasses.replace(volume, translation=tuple(t * to_volume_unit for t in translate))
    return volume


# ------------------------------------------------------------------------------ layers placed over the input
def reconstruction_layer_kwargs(
    layer: Any,
    volume: Any,
    out_spacing: Sequence[float] | None,
    *,
    name: str,
    spacing: Sequence[float],
    unit: str,
    metadata: dict | None = None,
) -> dict[str, Any]:
    """Layer keyword arguments for a reconstruction of ``layer`` that overlays it exactly.

    Parameters
    ----------
    layer : napari.layers.Image
        The input layer (its translate, contrast limits and units are kept).
    volume : napari_emsr.io.Volume
        The volume the reconstruction was made from (its spacing may be in nm, see :func:`layer_to_volume`).
    out_spacing : sequence of 3 float or None
        The reconstruction's voxel size in the volume's unit.
    name : str
        Layer name.
    spacing : sequence of 3 float
        The input's voxel size in the layer's unit (the panel's fields).
    unit : str
        That unit.
    metadata : dict, optional
        Extra metadata under the ``"emsr"`` key.

    Returns
    -------
    dict
        Keyword arguments of ``viewer.add_image``: the layer starts hidden (see the note inside).
    """
    spacing_in = np.asarray(spacing, float)
    if out_spacing is not None and volume.spacing is not None:
        # NOTE: the core may work in nm; scale the output like the input layer (whatever its unit).
        scale = tuple(float(s) for s in np.asarray(out_spacing, float) / np.asarray(volume.spacing, float) * spacing_in)
    else:
        scale = (float(spacing_in[2]), float(spacing_in[1]), float(spacing_in[2]))
    return {
        "name": name,
        "scale": scale,
        "translate": tuple(float(t) for t in layer.translate[-3:]),
        "contrast_limits": tuple(layer.contrast_limits),
        "multiscale": False,
        "colormap": "gray",
        "units": tuple(layer.units[-3:]),
        "axis_labels": AXIS_LABELS,
        # NOTE: napari's Image constructor slices the middle xy plane of a visible layer with its own default
        # dims order, which for an xz-chunked array is every chunk: the whole volume. Hidden, it computes
        # nothing; the caller shows it once it follows the viewer's (rolled) dims.
        "visible": False,
        "metadata": {
            "spacing": scale,
            "unit": unit,
            "source": (layer.metadata or {}).get("source"),
            "emsr": dict(metadata or {}),
        },
    }


#: The part of the input's contrast range where the uncertainty layer's colour map saturates: the two
#: restorations rarely differ by more (a few grey levels are already a visible disagreement).
UNCERTAINTY_RANGE = 0.05


def uncertainty_layer_kwargs(kwargs: dict) -> dict:
    """The keyword arguments of :func:`reconstruction_layer_kwargs`, made for an uncertainty layer.

    The uncertainty (where the xz and yz restorations disagree, in input intensities) is drawn in a hot colour
    map added on top of the fused layer: the brighter, the less the two directions agree. It saturates at
    :data:`UNCERTAINTY_RANGE` of the input's contrast range (differences that large are rare and already
    mean: do not trust this structure; the layer's contrast limits change it).
    """
    low, high = (float(c) for c in kwargs["contrast_limits"])
    return {
        **kwargs,
        "colormap": "inferno",
        "blending": "additive",
        "opacity": 0.8,
        "contrast_limits": (0.0, max(UNCERTAINTY_RANGE * (high - low), 1e-6)),
    }


def paging_order(ndim: int, planes: str) -> tuple[int, ...]:
    """The viewer's dims order that pages through the axis a reconstruction is chunked along.

    xz (and fused) planes are chunked along y, so the user pages through y; yz planes along x. In the default
    xy view one plane of such an array needs every chunk, i.e. the whole volume.

    Parameters
    ----------
    ndim : int
        The viewer's number of dims (3 or more; extra leading dims keep their place).
    planes : str
        ``"xz"``, ``"fuse"``, ``"yz"`` or ``"xy"`` (a paired model's lateral result: napari's default order).

    Returns
    -------
    tuple of int
    """
    order = {"yz": (2, 0, 1), "xy": (0, 1, 2)}.get(planes, (1, 0, 2))
    lead = tuple(range(ndim - 3))
    return lead + tuple(len(lead) + a for a in order)


def preview_layer_kwargs(layer: Any, lateral_spacing: float, width: int, slot: int, name: str) -> dict[str, Any]:
    """Layer keyword arguments for a 2D preview plane shown beside ``layer``, in the ``slot``-th place to its right.

    Parameters
    ----------
    layer : napari.layers.Image
        The input layer (3D).
    lateral_spacing : float
        Pixel size of the plane in the layer's unit (the plane is isotropic at the lateral spacing).
    width : int
        Columns of the preview planes.
    slot : int
        0 for the first plane to the right of the input, 1 for the next.
    name : str
        Layer name.

    Returns
    -------
    dict
        Keyword arguments of ``viewer.add_image``.
    """
    ty, tx = (float(t) for t in layer.translate[-2:])
    input_width = layer.data.shape[-1] * float(layer.scale[-1])
    gap = 0.05 * input_width
    x0 = tx + input_width + gap + slot * (width * lateral_spacing + gap)
    return {
        "name": name,
        "scale": (lateral_spacing, lateral_spacing),
        "translate": (ty, x0),
        "contrast_limits": tuple(layer.contrast_limits),
        "colormap": "gray",
        "units": tuple(layer.units[-2:]),
        "metadata": {"emsr": "preview xz plane (rows: z at the lateral spacing, columns: x)"},
    }


# ------------------------------------------------------------------------------------- paired LR / HR
def _lateral_geometry(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) scale and translate of an image layer (2D or 3D)."""
    return (np.asarray(layer.scale[-2:], float), np.asarray(layer.translate[-2:], float))


def lateral_layer_kwargs(layer: Any, factor: float, *, name: str, metadata: dict | None = None) -> dict[str, Any]:
    """Layer keyword arguments for a paired model's result of ``layer``, ``factor`` times finer in y and x.

    The result overlays its input: its pixel size is the input's divided by ``factor`` and HR pixel ``j``'s centre
    lies at LR ``(j + 0.5) / s - 0.5`` (:func:`napari_emsr.methods.paired.apply.lateral_translation`), so the first
    pixel's centre moves by ``(0.5 / s - 0.5)`` input pixels. The result is always 3D (z, y, x); a 2D input
    gives one plane.

    Parameters
    ----------
    layer : napari.layers.Image
        The LR layer the result was made from.
    factor : float
        s (1 for an enhancer).
    name : str
        Layer name.
    metadata : dict, optional
        Extra metadata under the ``"emsr"`` key.

    Returns
    -------
    dict
        Keyword arguments of ``viewer.add_image``; the layer starts hidden (the caller shows it).
    """
    scale2, translate2 = _lateral_geometry(layer)
    shift = (0.5 / float(factor) - 0.5) * scale2
    z_scale = float(layer.scale[-3]) if layer.ndim >= 3 else 1.0
    z_translate = float(layer.translate[-3]) if layer.ndim >= 3 else 0.0
    scale = (z_scale, *(float(v) for v in scale2 / float(factor)))
    meta = layer.metadata or {}
    units = tuple(layer.units[-3:]) if layer.ndim >= 3 else (layer.units[-1],) * 3
    return {
        "name": name,
        "scale": scale,
        "translate": (z_translate, *(float(v) for v in translate2 + shift)),
        "contrast_limits": tuple(layer.contrast_limits),
        "multiscale": False,
        "colormap": "gray",
        "units": units,
        "axis_labels": AXIS_LABELS,
        "visible": False,
        "metadata": {"spacing": scale, "unit": meta.get("unit"), "source": meta.get("source"),
                     "emsr": dict(metadata or {})},
    }


def hr_field_rectangle(layer: Any, offset: Sequence[float], size: Sequence[float]) -> np.ndarray:
    """The corners (4, 2) in world (y, x) of an HR field registered in the LR ``layer``.

    Parameters
    ----------
    layer : napari.layers.Image
        The LR layer.
    offset : (float, float)
        LR coordinates (y, x) of the HR field's top-left corner, pixel edges
        (:attr:`napari_emsr.methods.paired.registration.Registration.offset`).
    size : (float, float)
        The field's size in LR pixels (HR pixels / s).

    Returns
    -------
    numpy.ndarray
        Corners in napari's rectangle order; LR pixel ``i``'s centre lies at ``translate + i * scale``, so
        its edges at ``+- scale / 2``.
    """
    scale2, translate2 = _lateral_geometry(layer)
    top_left = translate2 + (np.asarray(offset, float) - 0.5) * scale2
    bottom_right = top_left + np.asarray(size, float) * scale2
    (y0, x0), (y1, x1) = top_left, bottom_right
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)
