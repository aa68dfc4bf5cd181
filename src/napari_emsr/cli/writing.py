"""Writing volumes from the command line: the export with its progress, Ctrl-C that leaves a resumable store,
the uncertainty map, and the checks of what an output may be (:mod:`napari_emsr.outputs` holds the policy)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .. import outputs
from ..errors import InputError, OutputExistsError
from .common import claim, emit, planes
from .progress import Progress


def model_exists(args, role: str = "model file"):
    """The refusal of an existing model file, saying how to use it or replace it."""
    # NOTE: the flag that names this path in this very command (train's model is -o; it has no --save-model)
    flag = "--checkpoint" if role == "checkpoint" else ("--save-model" if args.command == "reconstruct" else "-o")

    def refusal(path: Path) -> OutputExistsError:
        return OutputExistsError(
            f"the {role} {path} exists (a model from an earlier run?): to write the volume with it, run "
            f"`emsr apply {args.input} --model {path} -o OUTPUT`; to train again and replace it, pass --overwrite; "
            f"or give another path ({flag})"
        )
    return refusal


def already_written(args, out: Path, vol, model, options: dict) -> bool:
    """Whether ``out`` is the finished export of this very command (:func:`napari_emsr.outputs.finished_export`),
    by the fingerprint of the model's application with ``options``, in the NGFF version asked for (--ngff)."""
    from ..io.zarr_resume import store_ngff
    from ..methods import application_of

    app = application_of(model)
    done = outputs.finished_export(out, lambda: app.fingerprint(vol, model, **options), overwrite=args.overwrite)
    wanted = getattr(args, "ngff", None) or "0.4"
    if done and outputs.is_zarr_path(out) and store_ngff(out) not in (None, wanted):
        raise OutputExistsError(
            f"{out} is the finished export of this input with these settings, but in NGFF {store_ngff(out)}, "
            f"not {wanted}: pass --overwrite to write it again as NGFF {wanted}, or choose another output path"
        )
    return done


def check_ngff(args, out: Path) -> None:
    """--ngff names the OME-Zarr version of zarr outputs: refused when every output is a TIFF, before any work."""
    version = getattr(args, "ngff", None)
    zarrs = [p for p in (out, getattr(args, "uncertainty", None)) if p and outputs.is_zarr_path(p)]
    if version is not None and not zarrs:
        raise InputError(f"--ngff {version} is the OME-Zarr version of a .zarr/.ome.zarr output; {out} is a TIFF "
                         "stack: leave --ngff out, or write a .ome.zarr")


def nothing_to_do(args, out: Path) -> int:
    emit(args, {"output": str(out), "seconds": 0.0, "already_written": True},
         f"{out} is already the finished export of this input with these settings: nothing to do (pass "
         "--overwrite to write it again)")
    return 0


def _write_progress(args, desc: str, out) -> Progress:
    unit = "chunk" if outputs.is_zarr_path(out) else "plane"
    peek = (lambda: outputs.export_progress(out)) if outputs.resumable(out) else None
    return Progress(desc, unit, quiet=args.quiet, total=peek)


def _interrupted(args, out: Path, bar: Progress, spill: Path | None = None, existed: bool = False) -> None:
    """Ctrl-C during a write: say what is left and leave at once (removing the uncertainty's spill folder and the
    command's output locks). ``existed``: a file was at ``out`` before the write began."""
    import os
    import signal

    if spill is not None:
        shutil.rmtree(spill, ignore_errors=True)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the exit below
    bar.close(finished=False)
    if outputs.is_zarr_path(out):
        said = (f"{out} is incomplete (marked as such, nothing looks finished); run the same command again to "
                + ("resume it" if outputs.resumable(out) else "write it"))
    else:  # a TIFF goes under a temporary name and takes its own only once complete
        kept = "; the file already there is kept as it was" if existed else ""
        said = (f"nothing was written to {out} (a TIFF appears only once complete){kept}; run the command again to "
                "write it from the start")
    print(f"interrupted: {said}", file=sys.stderr)
    claims = getattr(args, "_claims", None)
    if claims is not None:  # NOTE: os._exit skips the context managers that would release the locks
        try:
            claims.close()
        except Exception:  # a lock left is harmless: the exit must happen
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    # NOTE: dask's worker threads would finish their chunks (minutes on a CPU) before a normal exit could
    # join them; what was written is safe (the completion marker lists the finished blocks), so leave now.
    os._exit(130)


def apply_options(args, app, *, axis: int | None = None, method: str | None = None) -> dict:
    """The application's options (:attr:`napari_emsr.methods.Application.options`) from the command's flags; a flag
    given for an application that does not take it is refused, naming the model's method (``method``) and the methods
    whose models take it."""
    from ..methods import METHODS

    given = {"planes": ("--fuse", getattr(args, "fuse", None)), "factor": ("--factor", getattr(args, "factor", None)),
             "enhance": ("--enhance", getattr(args, "enhance", False) or None),
             "consistent": ("--consistent", getattr(args, "consistent", False) or None)}
    for name, (flag, value) in given.items():
        if value is not None and name not in app.options:
            takers = [m.name for m in METHODS.values() if m.application and name in m.application.options]
            this = f"a model of method {method}" if method else "this model"
            result = "its result is xy planes made finer" if app.lateral else "it makes the stack isotropic"
            raise InputError(f"{flag} does not apply to {this} ({result}): it is for models of method "
                             f"{' or '.join(takers)}; leave {flag} out")
    values = {"planes": planes(args) if "planes" in app.options else None, "factor": getattr(args, "factor", None),
              "axis": axis, "deband": getattr(args, "deband", True), "enhance": bool(getattr(args, "enhance", False)),
              "compiled": bool(getattr(args, "compile", False)),
              "consistent": bool(getattr(args, "consistent", False))}
    return {k: v for k, v in values.items() if k in app.options}


def write(args, vol, model, out: Path, options: dict) -> dict:
    """Export the result of ``model`` (or an interpolation method's name) with its method's application, with
    progress (and, with --uncertainty, the disagreement map). Returns the ``--json`` payload; its ``"what"`` entry
    is a few words for the summary line ("" for none)."""
    from ..io.omezarr import ngff_version
    from ..methods import application_of

    app = application_of(model)
    bar = _write_progress(args, "write", out)
    t0 = time.perf_counter()
    # NOTE: the method's export reaches the zarr writer through the registry; the version travels as the
    # writer's default for this thread (ngff_version) rather than through every export function.
    spill = _spill_folder(args, app, options)
    existed = Path(out).exists()
    try:
        with ngff_version(getattr(args, "ngff", None)):
            try:
                with bar:
                    path = app.export(vol, model, out, device=args.device, overwrite=args.overwrite, progress=bar,
                                      **options, **({"spill": spill} if spill else {}))
            except KeyboardInterrupt:
                _interrupted(args, out, bar, spill, existed)
            extra, what = app.summary(vol, model, **options)
            info = {"output": str(path), "seconds": round(time.perf_counter() - t0, 2), **extra}
            if getattr(args, "ngff", None) and outputs.is_zarr_path(out):
                info["ngff"] = args.ngff
            if getattr(args, "uncertainty", None):
                info["uncertainty"] = write_uncertainty(args, vol, model, Path(args.uncertainty), options.get("axis"),
                                                        spill)
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)
    return info, what


def _spill_folder(args, app, options: dict) -> Path | None:
    """With --uncertainty on this machine (no --scheduler) and fused planes: a new hidden folder beside the
    uncertainty map where the export leaves each chunk's uncertainty (read back instead of restoring both
    directions again); None otherwise, or when it cannot be made (the uncertainty is then restored again)."""
    if not getattr(args, "uncertainty", None) or getattr(args, "scheduler", None) or app.uncertainty is None:
        return None
    if options.get("planes", "fuse") != "fuse":
        return None
    import tempfile

    try:
        return Path(tempfile.mkdtemp(prefix=".emsr-spill-", dir=Path(args.uncertainty).expanduser().absolute().parent))
    except OSError:
        return None


def check_uncertainty(args, out: Path, model_path=None) -> None:
    """--uncertainty: a volume path that is neither the input, the output nor the model; a trained model."""
    if not getattr(args, "uncertainty", None):
        return
    from ..io import TIFF_SUFFIXES, ZARR_SUFFIXES

    if not str(args.uncertainty).lower().rstrip("/").endswith(TIFF_SUFFIXES + ZARR_SUFFIXES):
        raise InputError(f"cannot write {args.uncertainty}: --uncertainty must end in .tif/.tiff or .zarr/.ome.zarr")
    outputs.check_output(args.uncertainty, args.overwrite,
                         not_={"input": args.input, "output": out, "model": model_path})
    from ..methods import METHODS

    method = getattr(args, "model", None) or getattr(args, "method", None)
    meth = METHODS.get(str(method))
    if meth is not None and not meth.trains:
        raise InputError(f"--uncertainty compares the xz and yz restorations of a trained model; {method} "
                         "interpolation gives the same volume both ways: train a model, or leave --uncertainty out")
    claim(args, args.uncertainty, "uncertainty map")  # before the main output is written, not after


def write_uncertainty(args, vol, model, path: Path, axis: int | None, spilled: Path | None = None) -> str:
    """Write where the xz and yz restorations disagree (:func:`napari_emsr.reconstruct.export_uncertainty`), from
    what the export left in ``spilled`` where it can."""
    from ..reconstruct import export_uncertainty

    bar = _write_progress(args, "uncertainty", path)
    existed = Path(path).exists()
    try:
        with bar:
            written = export_uncertainty(vol, model, path, factor=args.factor, device=args.device,
                                         overwrite=args.overwrite, progress=bar, axis=axis, spilled=spilled)
    except KeyboardInterrupt:
        _interrupted(args, path, bar, spilled, existed)
    return str(written)
