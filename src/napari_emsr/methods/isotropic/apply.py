"""How an isotropic model is applied (and interpolation, and the large-factor prior method): every xz (or yz)
plane restored lazily by :func:`napari_emsr.reconstruct.reconstruct`, written by
:func:`napari_emsr.reconstruct.export`.

These are the :class:`~napari_emsr.methods.Application` of the methods that make a stack isotropic; the engine
itself stays in :mod:`napari_emsr.reconstruct` (imported when a function here is called).
"""

from __future__ import annotations

from typing import Any

from .. import Application


def lazy(volume, model, **options) -> Any:
    """The isotropic volume, lazily (:func:`napari_emsr.reconstruct.reconstruct`)."""
    from ...reconstruct import reconstruct

    return reconstruct(volume, model, **options)


def export(volume, model, path, **kwargs) -> Any:
    """The isotropic volume written chunk by chunk (:func:`napari_emsr.reconstruct.export`)."""
    from ...reconstruct import export as write

    return write(volume, model, path, **kwargs)


def fingerprint(volume, model, *, planes: str = "fuse", factor: float | None = None, deband: bool = True,
                consistent: bool = False, **_: Any) -> dict[str, str]:
    """What produces the export (:func:`napari_emsr.outputs.export_fingerprint`)."""
    from ...outputs import export_fingerprint

    return export_fingerprint(volume, model, planes, factor, deband=deband, consistent=consistent)


def check(model, volume=None) -> None:
    """A trained model is valid (interpolation, a method name, always applies)."""
    if not isinstance(model, str):
        model.validate()


def summary(volume, model, *, axis: int | None = None, **_: Any) -> tuple[dict, str]:
    """The output's voxel size (the lateral spacing on every axis)."""
    from ...reconstruct import output_spacing

    ax = axis if axis is not None else getattr(model, "axis", 0)
    return {"spacing": output_spacing(volume, ax)}, ""


def uncertainty(volume, model, path, **kwargs) -> Any:
    """Where the xz and yz restorations disagree (:func:`napari_emsr.reconstruct.export_uncertainty`)."""
    from ...reconstruct import export_uncertainty

    return export_uncertainty(volume, model, path, **kwargs)


#: The application of the methods that make a stack isotropic along its anisotropic axis.
AXIAL = Application(kind="axial", lazy=lazy, export=export, fingerprint=fingerprint, check=check, summary=summary,
                    options=("planes", "factor", "axis", "deband", "compiled", "consistent"),
                    uncertainty=uncertainty)
