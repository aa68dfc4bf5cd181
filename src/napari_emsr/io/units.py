"""Length units and voxel sizes: the one unit table, unit names, spacing checks and conversion to nm.

Every reader and writer asks this module: a voxel size is three positive finite numbers (z, y, x), and a
known length unit (``"um"``, ``"micrometer"``, ``"Å"`` ...) is always converted to nanometres.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from ..errors import InputError

log = logging.getLogger(__name__)

#: Length units -> nanometres. Keys are lower case; NGFF (UDUNITS-2) names, ImageJ and OME spellings.
UNIT_TO_NM: dict[str, float] = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "\u00b5m": 1e3,  # micro sign
    "\u03bcm": 1e3,  # greek mu
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "pm": 1e-3,
    "picometer": 1e-3,
    "a": 0.1,
    "\u00e5": 0.1,  # Å
    "\u212b": 0.1,  # Angstrom sign
    "angstrom": 0.1,
}

#: The NGFF axis unit written for volumes in nanometres.
NGFF_NM = "nanometer"

Spacing = tuple[float, float, float]


def check_spacing(spacing: Any) -> Spacing:
    """Return ``spacing`` as three positive finite floats.

    Parameters
    ----------
    spacing : sequence of 3 numbers
        Voxel size (z, y, x).

    Returns
    -------
    tuple of float

    Raises
    ------
    InputError
        When it is not three positive finite numbers.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"voxel size {spacing!r} is not understood: give three numbers (z, y, x), e.g. (40, 4, 4)"
        ) from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"voxel size {spacing!r} is not valid: give three positive numbers (z, y, x), e.g. (40, 4, 4)"
        )
    return values  # type: ignore[return-value]


def check_translation(translation: Any) -> Spacing:
    """Return ``translation`` (the physical position of voxel (0, 0, 0)) as three finite floats.

    Raises
    ------
    InputError
        When it is not three finite numbers.
    """
    try:
        values = tuple(float(s) for s in translation)
    except (TypeError, ValueError):
        raise InputError(
            f"translation {translation!r} is not understood: give three numbers (z, y, x), e.g. (0, 0, 0)"
        ) from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(
            f"translation {translation!r} is not valid: give three finite numbers (z, y, x), e.g. (0, 0, 0)"
        )
    return values  # type: ignore[return-value]


def normalise_unit(unit: str | None) -> tuple[str | None, float | None]:
    """Map a unit name to ``("nm", factor to nm)`` when it is a known length unit.

    Returns
    -------
    tuple
        ``("nm", factor)`` for a known length, ``("pixel", None)`` for an empty or pixel unit,
        ``(unit, None)`` for anything else, ``(None, None)`` for None.
    """
    if unit is None:
        return None, None
    text = str(unit).strip()
    # ImageJ sometimes stores the micro sign escaped in its description.
    text = text.replace("\\u00B5", "\u00b5").replace("\\u00b5", "\u00b5")
    key = text.lower()
    if key in UNIT_TO_NM:
        return "nm", UNIT_TO_NM[key]
    if key in ("", "pixel", "pixels", "px"):
        return "pixel", None
    return text, None


def to_nm(
    spacing: Sequence[float] | None, unit: str | None, translation: Sequence[float] | None = None
) -> tuple[Spacing | None, str, Spacing | None]:
    """Checked voxel size (and translation) given by a caller, converted to nm when the unit is a length.

    Parameters
    ----------
    spacing : sequence of 3 float or None
        Voxel size (z, y, x) in ``unit``.
    unit : str or None
        Unit of ``spacing`` and ``translation``.
    translation : sequence of 3 float, optional
        Physical position of voxel (0, 0, 0), in ``unit``.

    Returns
    -------
    tuple
        ``(spacing, unit, translation)``: in nm with unit ``"nm"`` for a known length, else unchanged.

    Raises
    ------
    InputError
        For an invalid voxel size or translation.
    """
    sp = check_spacing(spacing) if spacing is not None else None
    tr = check_translation(translation) if translation is not None else None
    norm, factor = normalise_unit(unit)
    if factor is not None:
        if sp is not None:
            sp = tuple(v * factor for v in sp)  # type: ignore[assignment]
        if tr is not None:
            tr = tuple(v * factor for v in tr)  # type: ignore[assignment]
        return sp, "nm", tr
    return sp, (norm or unit or "nm"), tr


def spacing_in_nm(values: Sequence[float] | None, unit: str | None) -> tuple[Spacing | None, str]:
    """A voxel size found in a file, in nm where the unit is a known length.

    An invalid voxel size in a file is not the user's fault: it is logged and dropped (None), and the
    volume opens without one.
    """
    if values is None:
        return None, "nm"
    try:
        checked = check_spacing(values)
    except InputError:
        log.warning("ignoring invalid voxel size %r in the file", values)
        return None, "nm"
    norm, factor = normalise_unit(unit)
    if factor is not None:
        return tuple(v * factor for v in checked), "nm"  # type: ignore[return-value]
    return checked, (norm or "pixel")
