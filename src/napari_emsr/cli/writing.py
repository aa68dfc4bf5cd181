"""Writing volumes from the command line: the export with its progress, Ctrl-C that leaves a resumable store,
the uncertainty map, and the checks of what an output may be (:mod:`napari_emsr.outputs` holds the policy)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import outputs
from ..errors import InputError, OutputExistsError
from .common import claim, emit, planes
from .progress import Progress


def model_exists(args, role: str = "model file"):
    """The refusal of an existing model file, saying how to use it or replace it."""
    def refusal(path: Path) -> OutputExistsError:
        return OutputExistsError(
            f"the {role} {path} exists (a model from an earlier run?): to write the volume with it, run "
            f"`emsr apply {args.input} --model {path} -o OUTPUT`; to train again and replace it, pass --overwrite; "
            "or give another path (--save-model / --checkpoint)"
        )
    return refusal


def already_written(args, out: Path, vol, model, fingerprint=None) -> bool:
    """Whether ``out`` is the finished export of this very command (:func:`napari_emsr.outputs.finished_export`).
    ``fingerprint(vol, model)`` gives the export's fingerprint (default: the isotropic export's)."""
    from ..reconstruct import export_fingerprint

    def now():
        if fingerprint is not None:
            return fingerprint(vol, model)
        return export_fingerprint(vol, model, planes(args), args.factor, deband=getattr(args, "deband", True))

    return outputs.finished_export(out, now, overwrite=args.overwrite)


def nothing_to_do(args, out: Path) -> int:
    emit(args, {"output": str(out), "seconds": 0.0, "already_written": True},
         f"{out} is already the finished export of this input with these settings: nothing to do (pass "
         "--overwrite to write it again)")
    return 0


def _write_progress(args, desc: str, out) -> Progress:
    unit = "chunk" if outputs.is_zarr_path(out) else "plane"
    peek = (lambda: outputs.export_progress(out)) if outputs.resumable(out) else None
    return Progress(desc, unit, quiet=args.quiet, total=peek)


def _interrupted(out: Path, bar: Progress) -> None:
    """Ctrl-C during a write: say what is left and leave at once."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the exit below
    bar.close(finished=False)
    resume = ("run the same command again to resume it" if outputs.resumable(out)
              else "a TIFF is written again from the start")
    print(f"interrupted: {out} is incomplete (marked as such, nothing looks finished); {resume}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # NOTE: dask's worker threads would finish their chunks (minutes on a CPU) before a normal exit could
    # join them; what was written is safe (the completion marker lists the finished blocks), so leave now.
    os._exit(130)


def write(args, vol, model, out: Path, axis: int | None = None) -> dict:
    """Export the isotropic volume (and, with --uncertainty, the disagreement map) with progress."""
    from ..reconstruct import export, output_spacing

    bar = _write_progress(args, "write", out)
    t0 = time.perf_counter()
    try:
        with bar:
            path = export(
                vol, model, out, planes=planes(args), factor=args.factor, device=args.device,
                overwrite=args.overwrite, progress=bar, axis=axis, deband=getattr(args, "deband", True),
            )
    except KeyboardInterrupt:
        _interrupted(out, bar)
    written_axis = axis if axis is not None else getattr(model, "axis", 0)
    info = {"output": str(path), "seconds": round(time.perf_counter() - t0, 2),
            "spacing": output_spacing(vol, written_axis)}
    if getattr(args, "uncertainty", None):
        info["uncertainty"] = write_uncertainty(args, vol, model, Path(args.uncertainty), axis)
    return info


def check_uncertainty(args, out: Path, model_path=None) -> None:
    """--uncertainty: a volume path that is neither the input, the output nor the model; a trained model."""
    if not getattr(args, "uncertainty", None):
        return
    from ..io import TIFF_SUFFIXES, ZARR_SUFFIXES

    if not str(args.uncertainty).lower().rstrip("/").endswith(TIFF_SUFFIXES + ZARR_SUFFIXES):
        raise InputError(f"cannot write {args.uncertainty}: --uncertainty must end in .tif/.tiff or .zarr/.ome.zarr")
    outputs.check_output(args.uncertainty, args.overwrite,
                         not_={"input": args.input, "output": out, "model": model_path})
    method = getattr(args, "model", None) or getattr(args, "method", None)
    if method in ("cubic", "linear"):
        raise InputError(f"--uncertainty compares the xz and yz restorations of a trained model; {method} "
                         "interpolation gives the same volume both ways: train a model, or leave --uncertainty out")
    claim(args, args.uncertainty, "uncertainty map")  # before the main output is written, not after


def write_uncertainty(args, vol, model, path: Path, axis: int | None) -> str:
    """Write where the xz and yz restorations disagree (:func:`napari_emsr.reconstruct.export_uncertainty`)."""
    from ..reconstruct import export_uncertainty

    bar = _write_progress(args, "uncertainty", path)
    try:
        with bar:
            written = export_uncertainty(vol, model, path, factor=args.factor, device=args.device,
                                         overwrite=args.overwrite, progress=bar, axis=axis)
    except KeyboardInterrupt:
        _interrupted(path, bar)
    return str(written)


def apply_lateral(args, model, out: Path) -> int:
    """``emsr apply`` with a paired model: every xy plane super-resolved (or enhanced), lazily, chunk by chunk."""
    import functools

    from ..lateral_apply import check_lateral_model, export_lateral, lateral_fingerprint, lateral_spacing
    from ..methods.paired import as_stack, open_image

    if args.scheduler:
        raise InputError("--scheduler is not supported for paired models yet: run without it")
    check_lateral_model(model)
    vol = open_image(args.input)
    if already_written(args, out, as_stack(vol), model,
                       fingerprint=functools.partial(lateral_fingerprint, enhance=args.enhance)):
        return nothing_to_do(args, out)
    bar = _write_progress(args, "write", out)
    t0 = time.perf_counter()
    with bar:
        path = export_lateral(vol, model, out, enhance=args.enhance, device=args.device, overwrite=args.overwrite,
                              progress=bar)
    f = 1.0 if args.enhance else model.factor
    info = {"output": str(path), "seconds": round(time.perf_counter() - t0, 2), "factor": f,
            "spacing": lateral_spacing(vol, f), "mode": "enhance" if args.enhance else "lateral"}
    what = "enhanced" if args.enhance else f"xy planes x{f:g}"
    emit(args, info, f"wrote {info['output']} ({what}) in {info['seconds']:.1f} s")
    return 0
