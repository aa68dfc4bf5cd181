"""What every ``emsr`` command shares: output on stdout (human or ``--json``), the input, the factor, the planes,
the options given on the command line, and the outputs it claims."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..errors import InputError


def emit(args, payload: dict, human: str) -> None:
    """The command's result on stdout: one JSON object with ``--json``, else the lines for people."""
    if getattr(args, "json", False):
        # strict JSON: a float NaN or infinity (a figure not measured) is written as null, not as NaN, which
        # json.dumps would write without asking ``default`` and strict readers (jq, JavaScript) refuse
        print(json.dumps(finite(payload), default=jsonable, allow_nan=False))
    else:
        print(human)


def say(args, text: str) -> None:
    """A progress or status line for people, on stderr (never with ``-q``)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr, flush=True)


def finite(o):
    """``o`` with every non-finite float in its dicts, lists and tuples replaced by None."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def jsonable(o):
    """What :func:`json.dumps` cannot write itself: numpy scalars (non-finite ones as null), the rest as text."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return finite(o.item())
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def open_input(args):
    """The command's input volume (``--channel``, ``--series``)."""
    from ..io import open_volume

    return open_volume(args.input, channel=getattr(args, "channel", None), series=getattr(args, "series", None))


def factor_of(args, vol) -> float | None:
    """``--factor`` when given, else the factor from the volume's voxel size (None when it has none)."""
    if getattr(args, "factor", None) is not None:
        return float(args.factor)
    from ..geometry import factor_from_spacing

    return factor_from_spacing(vol.spacing, getattr(args, "axis", 0) or 0)


def planes(args) -> str:
    """``--fuse`` as the reconstruction's planes: xz, yz or fuse (both, averaged)."""
    f = (args.fuse or "xz,yz").replace(" ", "").lower()
    table = {"xz": "xz", "yz": "yz", "xz,yz": "fuse", "yz,xz": "fuse", "fuse": "fuse"}
    if f not in table:
        raise InputError(f"--fuse takes xz, yz or xz,yz (both, averaged), got {args.fuse!r}")
    return table[f]


def check_volume_output(args) -> None:
    """What an output volume path and --fuse must be, checked before any training starts."""
    from ..io import TIFF_SUFFIXES, ZARR_SUFFIXES

    if not str(args.output).lower().rstrip("/").endswith(TIFF_SUFFIXES + ZARR_SUFFIXES):
        raise InputError(
            f"cannot write {args.output}: the output must end in .tif/.tiff (TIFF stack) or .zarr/.ome.zarr (OME-Zarr)"
        )
    planes(args)


def claim(args, path, what: str, *, folder: bool | None = None, needed: int | None = None) -> Path | None:
    """Check and lock an output for the whole command (:class:`napari_emsr.outputs.OutputClaims`)."""
    claims = getattr(args, "_claims", None)
    if claims is None:  # not run through main(): checked, not locked
        from ..outputs import OutputClaims

        with OutputClaims() as once:
            return once.claim(path, what, folder=folder, needed=needed)
    return claims.claim(path, what, folder=folder, needed=needed)


def method_options(args, method) -> dict:
    """The method's options given on the command line; an option of another method is refused."""
    from ..methods import all_options

    given = {}
    for name in all_options():
        value = getattr(args, name, None)
        if value is None:
            continue
        if method.option(name) is None:
            raise InputError(f"--{name.replace('_', '-')} is not an option of method {method.name!r}")
        given[name] = value
    return given


def learning_rate(args) -> str | None:
    """``--lr`` is a learning rate (a number) or, for the paired method, the LR image (a path): sets ``args.lr``
    to the learning rate (``--learning-rate`` wins), checked under the spelling the user typed, and returns the
    LR image's path, if any."""
    lr_path = args.lr if isinstance(getattr(args, "lr", None), str) else None
    rate = getattr(args, "learning_rate", None)
    flag = "--learning-rate" if rate is not None else "--lr"
    args.lr = rate if rate is not None else (None if lr_path else getattr(args, "lr", None))
    if args.lr is not None:
        from ..train import MAX_LR

        value = float(args.lr)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{flag} {args.lr!r} cannot work: give a positive number")
        if value > MAX_LR:
            raise InputError(f"{flag} {args.lr!r} cannot work: give a learning rate of at most {MAX_LR:g} (Adam's "
                             "usual ones are 1e-4 to 1e-2)")
    return lr_path
