"""The ``emsr`` command line: the same core as the napari plugin, for batch work.

Every command prints a clear message and exits with code 2 on bad input (no traceback); ``--json`` prints one
machine-readable JSON object on stdout instead of the human summary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path

from . import __version__
from .errors import EMSRError, InputError, ModelError, OutputError, OutputExistsError

log = logging.getLogger("napari_emsr")

EPILOG = """\
examples:
  emsr demo                                   # the whole job on bundled sample data, with scores
  emsr info stack.tif                         # shape, voxel size, factor, anisotropy
  emsr reconstruct stack.tif -o iso.ome.zarr  # train on the stack itself, then write the isotropic volume
  emsr train stack.tif -o stack.emsr.pt --minutes 10
  emsr apply big.ome.zarr --model stack.emsr.pt -o big_iso.ome.zarr
  emsr reconstruct stack.tif -o iso.tif --method cubic   # interpolation only, no training
  emsr train --method paired --lr lr.tif --hr hr.tif -o pair.emsr.pt   # paired LR/HR super-resolution
  emsr apply big_lr.ome.zarr --model pair.emsr.pt -o big_hr.ome.zarr  # every xy plane s times finer

The factor F (z spacing / lateral spacing) comes from the file's voxel size; a file without one needs --factor.
Arrays are (z, y, x) with z the anisotropic axis unless --axis says otherwise.
"""


# ---------------------------------------------------------------------------------------------- helpers
def _emit(args, payload: dict, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=_jsonable))
    else:
        print(human)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _open(args):
    from .io import open_volume

    vol = open_volume(args.input, channel=getattr(args, "channel", None), series=getattr(args, "series", None))
    return vol


def _factor(args, vol) -> float | None:
    if getattr(args, "factor", None) is not None:
        return float(args.factor)
    from .geometry import factor_from_spacing

    return factor_from_spacing(vol.spacing, getattr(args, "axis", 0) or 0)


def _check_output(path: str | Path, overwrite: bool, *, not_: dict[str, str | Path | None] | None = None,
                  finished: bool = False) -> Path:
    """The output path, checked: never one of ``not_`` (what -> path: the input, the model ...), whatever the flags;
    an existing output only with ``--overwrite`` (an unfinished zarr export resumes without it). ``finished``: a
    finished zarr export that names what produced it is left for :func:`_already_written` to compare."""
    from .io import INCOMPLETE_MARKER, finished_fingerprint, never_started, same_place
    from .io.safety import NAME_MAX, check_output_path

    p = Path(path)
    if len(p.name.encode("utf-8", "surrogateescape")) > NAME_MAX:  # before any stat of it (ENAMETOOLONG)
        check_output_path(p)
    for what, other in (not_ or {}).items():
        if other is not None and same_place(p, other):
            raise InputError(f"{p} is the {what} ({other}): choose another output path (nothing was written)")
    _check_folder(p)
    if p.exists() and not overwrite:
        # an unfinished export resumes; a folder an export was killed in before anything was written is reused
        if finished and finished_fingerprint(p) is not None:
            return p
        if not (p / INCOMPLETE_MARKER).exists() and not never_started(p):
            raise OutputExistsError(f"{p} exists; pass --overwrite to replace it, or choose another output path")
    return p


def _already_written(args, out: Path, vol, model, fingerprint=None) -> bool:
    """Whether ``out`` is the finished export of this very command (same input, model and settings): then there is
    nothing to do. A finished export of anything else is refused, saying what differs. ``fingerprint(vol, model)``
    gives the export's fingerprint (default: the isotropic export's, from the command's planes and deband)."""
    from .io import fingerprint_differences, finished_fingerprint
    from .reconstruct import export_fingerprint

    before = finished_fingerprint(out) if not args.overwrite else None
    if before is None:
        return False
    if fingerprint is None:
        now = export_fingerprint(vol, model, _planes(args), args.factor, deband=getattr(args, "deband", True))
    else:
        now = fingerprint(vol, model)
    differs = fingerprint_differences(before, now)
    if differs is None:
        return True
    raise OutputExistsError(f"{out} exists: the finished export of something else ({differs}); pass --overwrite to "
                            "replace it, or choose another output path")


def _check_folder(path: Path) -> None:
    """The folder an output goes into must exist: a typo in it should not create a tree of folders."""
    parent = path.expanduser().absolute().parent
    if not parent.is_dir():
        raise InputError(
            f"the folder {parent} does not exist: create it first (mkdir -p {parent}) or choose another output path"
        )


def _check_model_path(path: Path, args, *, role: str, not_: dict[str, str | Path | None],
                      reusable: bool = False) -> bool:
    """A model file the command will write: never the input or the output; an existing file only with --overwrite
    (or when it is the model being resumed). ``reusable``: an existing file is left for :func:`_own_model` to
    judge (the model an earlier run of this very command saved); returns whether it is such a candidate."""
    from .io import same_place

    for what, other in not_.items():
        if other is not None and same_place(path, other):
            raise InputError(f"the {role} {path} is the {what} ({other}): choose another path (nothing was written)")
    _check_folder(path)
    resumed = getattr(args, "resume", None)
    if path.exists() and not args.overwrite and not (resumed and same_place(path, resumed)):
        if reusable and path.is_file():
            return True
        raise _model_exists(path, args, role)
    return False


def _model_exists(path: Path, args, role: str = "model file") -> OutputExistsError:
    return OutputExistsError(
        f"the {role} {path} exists (a model from an earlier run?): to write the volume with it, run "
        f"`emsr apply {args.input} --model {path} -o OUTPUT`; to train again and replace it, pass --overwrite; "
        "or give another path (--save-model / --checkpoint)"
    )


def _made_by(args, vol, method, out: Path) -> dict:
    """What a model trained by ``emsr reconstruct`` is the result of: the input (its export fingerprint: source,
    shape, voxel size, sampled data), the output and every training option. Saved in the model's config, so that
    the same command run again (after an interrupted export) writes with it instead of training again."""
    from .reconstruct import export_fingerprint

    train = {k: getattr(args, k, None) for k in ("method", "net", "size", "steps", "minutes", "patch", "batch",
                                                 "lr", "seed", "factor", "axis", "val_every", "resume")}
    train["options"] = _method_options(args, method)
    source = export_fingerprint(vol, method.name, _planes(args), args.factor)["input"]
    made = {"command": "reconstruct", "input": source, "output": str(out.expanduser().absolute()), "train": train}
    return json.loads(json.dumps(made, default=str))  # as it reads back from the file


def _own_model(args, path: Path):
    """The existing model file ``path`` if this very command saved it (same input, output and options: a run
    whose export was interrupted), to write with instead of training again; else the usual refusal."""
    from .model import EMSRModel

    try:
        model = EMSRModel.load(path)
    except ModelError:
        raise _model_exists(path, args) from None
    if model.config.get("made_by") != args._made_by:
        raise _model_exists(path, args)
    if not args.quiet:
        print(f"using {path}, the model this command trained in an earlier run (same input and options): no "
              "training; pass --overwrite to train again", file=sys.stderr)
    return model


def _claim(args, path: str | Path | None, what: str, *, folder: bool | None = None, needed: int | None = None
           ) -> Path | None:
    """An output this command will write, checked and locked for the whole command, before any work.

    :func:`~napari_emsr.io.safety.check_output_path` refuses now what the operating system would refuse at the end
    of a long run (a folder where a file goes, a read-only or full disk, a name too long, ``/proc``); the output
    lock is held until the command ends, so that a second ``emsr`` writing the same file is refused at once, naming
    this one (the writers' own locks inside are the same lock, re-entrant). ``folder``: a zarr store (default: from
    the name)."""
    if path is None:
        return None
    from .io import ZARR_SUFFIXES
    from .io.safety import check_output_path, output_lock

    if "://" in str(path):  # a remote store: the writer says what is wrong with it
        return Path(str(path))
    if folder is None:
        folder = str(path).lower().rstrip("/").endswith(ZARR_SUFFIXES)
    p = check_output_path(path, folder=folder, needed=needed, what=what)
    locks = getattr(args, "_locks", None)
    if locks is not None:
        locks.enter_context(output_lock(p, what=what))
    return p


def _check_volume_output(args) -> None:
    """What an output volume path and --fuse must be, checked before any training starts."""
    from .io import TIFF_SUFFIXES, ZARR_SUFFIXES

    if not str(args.output).lower().rstrip("/").endswith(TIFF_SUFFIXES + ZARR_SUFFIXES):
        raise InputError(
            f"cannot write {args.output}: the output must end in .tif/.tiff (TIFF stack) or .zarr/.ome.zarr (OME-Zarr)"
        )
    _planes(args)


def _progress(desc: str, total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    from .io import finite_check
    from .metrics import anisotropy

    vol = _open(args)
    finite_check(vol.data)  # NaN would read as "no texture" below
    f = _factor(args, vol)
    an = anisotropy(vol.data, spacing=vol.spacing) if not args.fast else None
    prof = None
    if not args.fast and f and f > 1.0:
        from .degrade import fit_profile

        try:
            prof = fit_profile(vol.data, f).as_dict()
        except InputError as err:
            prof = {"profile": None, "reliable": False, "note": f"not estimated: {err}"}
    payload = {
        "path": str(args.input),
        "shape": list(vol.shape),
        "dtype": str(vol.dtype),
        "spacing": list(vol.spacing) if vol.spacing else None,
        "unit": vol.unit,
        "factor": f,
        "anisotropy": an,
        "profile": prof,
    }
    lines = [
        f"{args.input}",
        f"  shape (z, y, x): {tuple(vol.shape)}  dtype: {vol.dtype}",
        f"  voxel size (z, y, x): {vol.spacing} {vol.unit}"
        if vol.spacing
        else "  voxel size: not in the file (pass --factor)",
        f"  factor F = z / lateral spacing: {f:g}" if f else "  factor: unknown",
    ]
    if an:
        lines.append(f"  anisotropy (reference-free, 1 = isotropic): {an.get('ratio', float('nan')):.2f}")
    if prof:
        lines.append(f"  section profile (what --profile auto trains with): {prof['note']}")
    if args.degradation:
        lines += _degradation_report(args, vol, f, payload)
    _emit(args, payload, "\n".join(lines))
    return 0


def _degradation_report(args, vol, factor: float | None, payload: dict) -> list[str]:
    """``info --degradation OUT.tif``: real axial planes next to simulated ones (each profile, the fitted one and
    the model's learned degradation), written as TIFF, PNG and JSON; returns the lines for people."""
    from .sections import compare_sections, write_report

    out = _check_output(args.degradation, args.overwrite, not_={"input": args.input, "model": args.model})
    for suffix in (".png", ".json"):
        _check_output(out.with_suffix(suffix), args.overwrite, not_={"input": args.input, "model": args.model})
    for suffix in (out.suffix, ".png", ".json"):
        _claim(args, out.with_suffix(suffix), "report", folder=False)
    if not factor or factor <= 1.0:
        raise InputError("the factor F is unknown or 1: pass --factor to inspect the axial degradation")
    model = None
    if args.model:
        from .model import EMSRModel

        model = EMSRModel.load(args.model)
        model.check_compatible(factor, args.axis)
    res = compare_sections(vol.data, factor, axis=args.axis, model=model)
    paths = write_report(res, out)
    payload["degradation"] = {"stats": res["stats"], "closest": res["closest"], "fit": res["fit"], **paths}
    lines = ["  sections, simulated vs real axial planes (spectral distance along z, lower is closer; noise):"]
    for name, st in res["stats"].items():
        dist = "" if st["distance"] is None else f"distance {st['distance']:.3f}  "
        lines.append(f"    {name:<16} {dist}noise {st['noise']:.4f}")
    lines.append(f"  closest: {res['closest']}; planes written to {paths['tiff']} and {paths['png']}")
    return lines


# ---------------------------------------------------------------------------------------------- train
def _method_options(args, method) -> dict:
    """The method's options given on the command line; an option of another method is refused."""
    from .methods import all_options

    given = {}
    for name in all_options():
        value = getattr(args, name, None)
        if value is None:
            continue
        if method.option(name) is None:
            raise InputError(f"--{name.replace('_', '-')} is not an option of method {method.name!r}")
        given[name] = value
    return given


def _train_config(args, checkpoint: str | None = None):
    from .methods import get_method
    from .train import TrainConfig

    method = get_method(args.method)
    given = {k: getattr(args, k) for k in ("steps", "minutes", "patch", "batch", "lr", "val_every")
             if getattr(args, k, None) is not None}
    return TrainConfig(
        factor=args.factor,
        axis=args.axis,
        method=method.name,
        net=args.net,
        size=args.size,
        options=_method_options(args, method),
        device=args.device,
        seed=args.seed,
        preview_every=0,
        checkpoint=str(args.checkpoint) if args.checkpoint else checkpoint,
        **given,
    )


def _run_training(args, vol, out_model: Path | None):
    """Train with a progress bar; Ctrl-C keeps the model trained so far. Returns (model, interrupted)."""
    from .train import Trainer

    cfg = _train_config(args, str(out_model) if out_model is not None else None)
    trainer = Trainer(vol, cfg, resume=args.resume)
    c = trainer.config
    for path, what in ((out_model, "model file"), (cfg.checkpoint, "checkpoint")):
        if path is not None:  # room for the file, now that its size is known
            _claim(args, path, what, folder=False, needed=trainer.model_bytes())
    if not args.quiet:
        budget = f"{c.minutes:g} min" if c.minutes else f"{c.steps} steps"
        profile = c.options.get("profile")
        sections = f", {profile} sections" if profile else ""
        print(f"training {c.method}: {c.net} ({c.size}) for F = {c.factor:g}{sections}, on {trainer.device}, {budget}",
              file=sys.stderr)
        for note in trainer.notes:
            print(note, file=sys.stderr)
    shown = len(trainer.notes)
    total = c.steps if not c.minutes else None
    bar = _progress("train", total, args.quiet)
    interrupted = False
    last = None
    stage = None
    try:
        for ev in trainer.run():
            last = ev
            if ev.stage_count > 1 and ev.stage != stage:  # a new stage: its own bar length and name
                stage = ev.stage
                bar.reset(total=ev.total if not c.minutes or ev.stage != "restore" else None)
                bar.set_description(f"train [{ev.stage} {ev.stage_index + 1}/{ev.stage_count}]")
                if not args.quiet and len(trainer.notes) > shown:  # what an earlier stage learned
                    for note in trainer.notes[shown:]:
                        bar.write(note, file=sys.stderr)
                    shown = len(trainer.notes)
            bar.update(ev.step - bar.n)
            post = {"loss": f"{ev.loss:.4f}"}
            if ev.gain is not None:
                post["vs cubic"] = f"{ev.gain:+.2f} dB"
            bar.set_postfix(post, refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    model = trainer.model
    if out_model is not None:
        made_by = getattr(args, "_made_by", None)
        if made_by is not None and not interrupted:  # this command's own model: a re-run uses it, not retrains
            model.config["made_by"] = made_by
        _save_or_rescue(model, out_model)
    if interrupted:
        print(f"interrupted at step {trainer.step}; the model trained so far is saved in {out_model}", file=sys.stderr)
    return model, trainer, interrupted, last


def _save_or_rescue(model, path: Path) -> Path:
    """Save the trained model to ``path``; if that fails now (the disk filled up or the folder became read-only
    during training), keep it in a new file in the temporary folder and say where, so no training is lost."""
    import os
    import tempfile

    try:
        return model.save(path)
    except (OutputError, OSError) as exc:
        if isinstance(exc, EMSRError) and not isinstance(exc, OutputError):
            raise
        try:
            fd, name = tempfile.mkstemp(prefix=f"{Path(path).name}.", suffix=".rescued.emsr.pt")
            os.close(fd)
            kept = model.save(name)
        except (OSError, EMSRError):
            raise OutputError(f"the trained model could not be saved to {path} ({exc}), nor to the temporary "
                              "folder: free some space and train again") from None
        raise OutputError(f"the trained model could not be saved to {path} ({exc}). It is kept in {kept}: move it "
                          f"where you want it (mv {kept} {path}, or somewhere writable); nothing else was "
                          "written") from None


def _learning_rate(args) -> str | None:
    """``--lr`` is a learning rate (a number) or, for the paired method, the LR image (a path): sets ``args.lr``
    to the learning rate (``--learning-rate`` wins) and returns the LR image's path, if any."""
    lr_path = args.lr if isinstance(getattr(args, "lr", None), str) else None
    rate = getattr(args, "learning_rate", None)
    args.lr = rate if rate is not None else (None if lr_path else getattr(args, "lr", None))
    return lr_path


def _paired_inputs(args, lr_path: str | None):
    """The paired method's HR (the trainer's volume) and LR (the ``lr_image`` option), checked; sets the factor."""
    from .methods.paired import check_pair, open_image, pair_factor

    if args.hr and args.input:
        raise InputError(f"give the HR image once: as --hr or as INPUT (got {args.input} and {args.hr})")
    hr_src = args.hr or args.input
    if not hr_src:
        raise InputError("--method paired needs the HR image (--hr HR) and, for real pairs, the LR image (--lr LR)")
    lr_src = lr_path or getattr(args, "lr_image", None)
    hr = open_image(hr_src)
    if lr_src:
        lr = open_image(lr_src)
        check_pair(lr, hr)
        args.factor = pair_factor(lr, hr, args.factor)
        if not lr_src.startswith("memory:"):
            args.lr_image = str(Path(lr_src).expanduser().absolute())
    elif args.factor is None:
        raise InputError("without an LR image (--lr) give the factor to learn from the HR alone: --factor S (HR "
                         "pixels per LR pixel, e.g. 2 or 3.33)")
    args.input = hr_src
    return hr


def _train_volume(args):
    """The volume the trainer learns from (the HR image for the paired method); refuses paired-only flags
    elsewhere."""
    lr_path = _learning_rate(args)
    if args.method == "paired":
        return _paired_inputs(args, lr_path)
    if lr_path or getattr(args, "hr", None):
        raise InputError("--lr LR (an image) and --hr HR are the inputs of --method paired; a learning rate is a "
                         "number (--lr 1e-3)")
    if not args.input:
        raise InputError("give the input stack (INPUT)")
    return _open(args)


def cmd_train(args) -> int:
    out = _check_output(args.output, args.overwrite, not_={"input": args.input or args.hr})
    _claim(args, out, "model file", folder=False)
    if args.checkpoint:
        _check_model_path(Path(args.checkpoint), args, role="checkpoint", not_={"input": args.input or args.hr,
                                                                                "model file": out})
        _claim(args, args.checkpoint, "checkpoint", folder=False)
    vol = _train_volume(args)
    model, trainer, interrupted, _ = _run_training(args, vol, out)
    h = model.history[-1] if model.history else {}
    payload = {
        "model": str(out),
        "steps": model.step,
        "factor": model.factor,
        "net": model.config["net"],
        "val_psnr": h.get("val_psnr"),
        "cubic_psnr": h.get("cubic_psnr"),
        "interrupted": interrupted,
        "device": trainer.device,
        "method": model.config.get("method"),
        "options": model.config.get("options"),
        "profile": model.config.get("profile"),
        "profile_fit": model.config.get("profile_fit"),
        "profile_judged": model.config.get("profile_judged"),
    }
    gain = (h.get("val_psnr") or 0) - (h.get("cubic_psnr") or 0)
    human = f"saved {out} ({model.step} steps; held-out planes: {gain:+.2f} dB over cubic)"
    if not interrupted:
        human += _heldout(args, vol, model, payload)
    _emit(args, payload, human)
    return 130 if interrupted else 0


def _heldout(args, vol, model, payload: dict) -> str:
    """With --heldout: judge ``model`` on the stack's real held-out sections (:func:`napari_emsr.heldout.estimate`);
    the figure goes into ``payload["quality"]["heldout_sections"]`` and the summary line returned."""
    if not getattr(args, "heldout", False):
        return ""
    from .heldout import estimate

    steps = args.heldout_steps
    if steps is not None and steps < 1:
        raise InputError(f"--heldout-steps {steps}: give a positive number of steps (e.g. 300)")
    q = estimate(vol, model, steps=steps, device=getattr(args, "device", "auto") or "auto")
    payload.setdefault("quality", {})["heldout_sections"] = q.as_dict()
    return (f"\nheld-out sections: {q.gain_db:+.2f} dB over cubic ({q.sections} real sections restored from the "
            f"others at {q.factor:g}x spacing)")


# ---------------------------------------------------------------------------------------------- apply
def _planes(args) -> str:
    f = (args.fuse or "xz,yz").replace(" ", "").lower()
    table = {"xz": "xz", "yz": "yz", "xz,yz": "fuse", "yz,xz": "fuse", "fuse": "fuse"}
    if f not in table:
        raise InputError(f"--fuse takes xz, yz or xz,yz (both, averaged), got {args.fuse!r}")
    return table[f]


def _write(args, vol, model, out: Path, axis: int | None = None) -> dict:
    from tqdm.auto import tqdm

    from .reconstruct import export, output_spacing

    bar = tqdm(total=None, desc="write", unit="chunk", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    try:
        path = export(
            vol, model, out, planes=_planes(args), factor=args.factor, device=args.device,
            overwrite=args.overwrite, progress=progress, axis=axis, deband=getattr(args, "deband", True),
        )
    except KeyboardInterrupt:
        import os
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the exit below
        bar.close()
        resume = ("run the same command again to resume it" if not str(out).lower().endswith((".tif", ".tiff"))
                  else "a TIFF is written again from the start")
        print(f"interrupted: {out} is incomplete (marked as such, nothing looks finished); {resume}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # NOTE: dask's worker threads would finish their chunks (minutes on a CPU) before a normal exit could
        # join them; what was written is safe (the completion marker lists the finished blocks), so leave now.
        os._exit(130)
    bar.close()
    written_axis = axis if axis is not None else getattr(model, "axis", 0)
    info = {"output": str(path), "seconds": round(time.perf_counter() - t0, 2),
            "spacing": output_spacing(vol, written_axis)}
    if getattr(args, "uncertainty", None):
        info["uncertainty"] = _write_uncertainty(args, vol, model, Path(args.uncertainty), axis)
    return info


def _check_uncertainty(args, out: Path, model_path=None) -> None:
    """--uncertainty: a volume path that is neither the input, the output nor the model; a trained model."""
    if not getattr(args, "uncertainty", None):
        return
    from .io import TIFF_SUFFIXES, ZARR_SUFFIXES

    if not str(args.uncertainty).lower().rstrip("/").endswith(TIFF_SUFFIXES + ZARR_SUFFIXES):
        raise InputError(f"cannot write {args.uncertainty}: --uncertainty must end in .tif/.tiff or .zarr/.ome.zarr")
    _check_output(args.uncertainty, args.overwrite, not_={"input": args.input, "output": out, "model": model_path})
    method = getattr(args, "model", None) or getattr(args, "method", None)
    if method in ("cubic", "linear"):
        raise InputError(f"--uncertainty compares the xz and yz restorations of a trained model; {method} "
                         "interpolation gives the same volume both ways: train a model, or leave --uncertainty out")
    _claim(args, args.uncertainty, "uncertainty map")  # before the main output is written, not after


def _write_uncertainty(args, vol, model, path: Path, axis: int | None) -> str:
    """Write where the xz and yz restorations disagree (:func:`napari_emsr.reconstruct.export_uncertainty`)."""
    from tqdm.auto import tqdm

    from .reconstruct import export_uncertainty

    bar = tqdm(total=None, desc="uncertainty", unit="chunk", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        written = export_uncertainty(vol, model, path, factor=args.factor, device=args.device,
                                     overwrite=args.overwrite, progress=progress, axis=axis)
    finally:
        bar.close()
    return str(written)


def _apply_lateral(args, model, out: Path) -> int:
    """``emsr apply`` with a paired model: every xy plane super-resolved (or enhanced), lazily, chunk by chunk."""
    from tqdm.auto import tqdm

    from .lateral_apply import check_lateral_model, export_lateral, lateral_fingerprint, lateral_spacing
    from .methods.paired import as_stack, open_image

    if args.scheduler:
        raise InputError("--scheduler is not supported for paired models yet: run without it")
    check_lateral_model(model)
    vol = open_image(args.input)
    if _already_written(args, out, as_stack(vol), model,
                        fingerprint=functools.partial(lateral_fingerprint, enhance=args.enhance)):
        return _nothing_to_do(args, out)
    bar = tqdm(total=None, desc="write", unit="chunk", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    try:
        path = export_lateral(vol, model, out, enhance=args.enhance, device=args.device, overwrite=args.overwrite,
                              progress=progress)
    finally:
        bar.close()
    f = 1.0 if args.enhance else model.factor
    info = {"output": str(path), "seconds": round(time.perf_counter() - t0, 2), "factor": f,
            "spacing": lateral_spacing(vol, f), "mode": "enhance" if args.enhance else "lateral"}
    what = "enhanced" if args.enhance else f"xy planes x{f:g}"
    _emit(args, info, f"wrote {info['output']} ({what}) in {info['seconds']:.1f} s")
    return 0


def _nothing_to_do(args, out: Path) -> int:
    _emit(args, {"output": str(out), "seconds": 0.0, "already_written": True},
          f"{out} is already the finished export of this input with these settings: nothing to do (pass "
          "--overwrite to write it again)")
    return 0


def cmd_apply(args) -> int:
    from .model import EMSRModel

    out = _check_output(args.output, args.overwrite, not_={"input": args.input, "model": args.model},
                        finished=not args.uncertainty)
    _check_volume_output(args)
    _claim(args, out, "output")
    _check_uncertainty(args, out, args.model)
    model = args.model if args.model in ("cubic", "linear") else EMSRModel.load(args.model)
    if args.enhance or (not isinstance(model, str) and model.config.get("method") == "paired"):
        if args.uncertainty:
            raise InputError("--uncertainty compares the xz and yz restorations of an isotropic model; a paired "
                             "model restores xy planes: leave --uncertainty out")
        if isinstance(model, str):
            raise InputError("--enhance needs a model of method paired (emsr train --method paired)")
        for flag, given in (("--factor", args.factor), ("--fuse", args.fuse)):
            if given is not None:
                raise InputError(f"{flag} is for isotropic models; {args.model} is a paired model, which makes every "
                                 f"xy plane {model.factor:g} times finer (its own factor) or, with --enhance, "
                                 f"restores it at the same size: leave {flag} out")
        return _apply_lateral(args, model, out)
    vol = _open(args)
    if _already_written(args, out, vol, model):
        return _nothing_to_do(args, out)
    from .cluster import open_client

    with open_client(args.scheduler):
        info = _write(args, vol, model, out)
    _emit(args, info, f"wrote {info['output']} in {info['seconds']:.1f} s")
    return 0


def cmd_reconstruct(args) -> int:
    from .cluster import check_spec, open_client
    from .methods import get_method

    meth = get_method(args.method)
    out = _check_output(args.output, args.overwrite, not_={"input": args.input},
                        finished=not meth.trains and not args.uncertainty)
    _check_volume_output(args)
    check_spec(args.scheduler)
    if meth.name == "paired":
        raise InputError("the paired method trains from an LR and an HR image, then applies to another volume: run "
                         "`emsr train --method paired --lr LR --hr HR -o MODEL`, then `emsr apply INPUT --model MODEL "
                         "-o OUTPUT`")
    if _learning_rate(args) or getattr(args, "hr", None):
        raise InputError("--lr LR (an image) and --hr HR are the inputs of `emsr train --method paired`; a learning "
                         "rate is a number (--lr 1e-3)")
    _claim(args, out, "output")
    model_path = None
    reuse = False
    if meth.trains:
        model_path = Path(args.save_model) if args.save_model else out.with_name(out.name.split(".")[0] + ".emsr.pt")
        reuse = _check_model_path(model_path, args, role="model file", not_={"input": args.input, "output": out},
                                  reusable=True)
        _claim(args, model_path, "model file", folder=False)
        if args.checkpoint:
            _check_model_path(Path(args.checkpoint), args, role="checkpoint", not_={"input": args.input, "output": out})
            _claim(args, args.checkpoint, "checkpoint", folder=False)
    _check_uncertainty(args, out, model_path)
    vol = _open(args)
    payload: dict = {"method": meth.name}
    if meth.trains:
        args._made_by = _made_by(args, vol, meth, out)
        model = _own_model(args, model_path) if reuse else None
        if model is None:
            model, trainer, interrupted, _ = _run_training(args, vol, model_path)
            if interrupted:
                return 130
        payload.update({"model": str(model_path), "steps": model.step, "profile": model.config.get("profile"),
                        "profile_fit": model.config.get("profile_fit"),
                        "profile_judged": model.config.get("profile_judged"), "retrained": not reuse})
    else:
        model = meth.name
        if _already_written(args, out, vol, model):
            return _nothing_to_do(args, out)
    with open_client(args.scheduler):  # training ran here; the write goes to the cluster when one is named
        info = _write(args, vol, model, out, axis=args.axis if isinstance(model, str) else None)
    payload.update(info)
    human = f"wrote {info['output']} in {info['seconds']:.1f} s"
    if meth.trains:
        human += _heldout(args, vol, model, payload)
    _emit(args, payload, human)
    return 0


# ---------------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    import numpy as np

    from .metrics import psnr, ssim
    from .reconstruct import reconstruct
    from .sample import ATTRIBUTION, load_sample

    if _learning_rate(args):
        raise InputError("--lr takes a learning rate (a number, e.g. 1e-3) here")
    _claim(args, args.output, "model file", folder=False)
    t0 = time.perf_counter()
    aniso, gt = load_sample(factor=args.demo_factor, profile=args.demo_profile)
    if not args.quiet:
        print(
            f"sample: {ATTRIBUTION}\n  ground truth {tuple(gt.shape)} at 10 nm; "
            f"anisotropic stack {tuple(aniso.shape)}, "
            f"F = {args.demo_factor}, {args.demo_profile} sections",
            file=sys.stderr,
        )
    if args.minutes is None and args.steps is None:
        args.minutes = 3.0
    model, trainer, interrupted, _ = _run_training(args, aniso, Path(args.output) if args.output else None)
    ref = np.asarray(gt.data)
    rows = {}
    for name, m in (("linear", "linear"), ("cubic", "cubic"), (f"emsr ({model.config['net']})", model)):
        rec = np.asarray(reconstruct(aniso, m, planes="fuse" if m is model else "xz", device=args.device).compute())
        rec = rec[: ref.shape[0]]
        rows[name] = {"psnr": psnr(ref, rec), "ssim_xz": ssim(ref, rec, planes="xz")}
    emsr = rows[f"emsr ({model.config['net']})"]
    gain = emsr["psnr"] - rows["cubic"]["psnr"]
    payload = {"scores": rows, "gain_db": gain, "seconds": round(time.perf_counter() - t0, 1), "device": trainer.device,
               "steps": model.step, "profile": model.config.get("profile")}
    lines = [f"{'method':<18} {'PSNR (dB)':>10} {'SSIM (xz)':>10}"]
    for k, v in rows.items():
        lines.append(f"{k:<18} {v['psnr']:>10.2f} {v['ssim_xz']:>10.3f}")
    lines.append(f"gain over cubic: {gain:+.2f} dB PSNR, {emsr['ssim_xz'] - rows['cubic']['ssim_xz']:+.3f} SSIM "
                 f"({model.step} steps on {trainer.device}, {payload['seconds']:.0f} s in all)")
    _emit(args, payload, "\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------- parser
def _add_common(p, *, model_input=False):
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: the best that exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the results on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_input(p, optional: bool = False):
    more = {"nargs": "?", "default": None} if optional else {}
    p.add_argument("input", help="TIFF stack (.tif/.tiff), an OME-Zarr / zarr folder, or a zarr URL (file://, s3://, "
                   "gs://, https://: install s3fs / gcsfs / aiohttp), axes (z, y, x)"
                   + ("; with --method paired: the HR image or stack (or --hr)" if optional else ""), **more)
    p.add_argument("--channel", type=int, default=None, help="channel to use in multi-channel data")
    p.add_argument("--series", type=int, default=None, metavar="N",
                   help="image series N of a TIFF holding several (e.g. an OME-TIFF with a thumbnail; default: the "
                   "largest 3D series, said when there is a choice)")


def _method_help() -> str:
    from .methods import DEFAULT_METHOD, METHODS

    return "; ".join(f"{name}{' (default)' if name == DEFAULT_METHOD else ''}: {m.description}"
                     for name, m in METHODS.items())


def _add_train(p, demo=False):
    """Training options; the methods, networks and method options are read from their registries."""
    from .methods import DEFAULT_METHOD, METHODS, all_options
    from .nets import DESCRIPTIONS, net_names

    g = p.add_argument_group("training")
    if not demo:
        g.add_argument("--factor", type=float, default=None,
                       help="anisotropy factor F = z spacing / lateral spacing (default: from the voxel size)")
        g.add_argument("--axis", type=int, default=0, help="the anisotropic axis (default 0 = z)")
        g.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS), help=_method_help())
    else:
        p.set_defaults(factor=None, axis=0, method=DEFAULT_METHOD)
    nets = "; ".join(f"{n}: {DESCRIPTIONS.get(n, '').rstrip('.')}" for n in net_names())
    g.add_argument("--net", default=None, choices=net_names(), help=f"network (default: the method's). {nets}")
    g.add_argument("--size", default=None, help="network size: tiny, small or base (default: the method's)")
    g.add_argument("--steps", type=int, default=None, help="training steps (default: the method's)")
    g.add_argument("--minutes", type=float, default=None,
                   help="training time budget in minutes (stops at the first of steps/minutes)")
    g.add_argument("--patch", type=int, default=None, help="training patch size in pixels (default: the method's)")
    g.add_argument("--batch", type=int, default=None, help="patches per step (default: the method's)")
    g.add_argument("--lr", type=_number_or_path, default=None, metavar="RATE|LR",
                   help="peak learning rate (Adam, cosine decay; default: the method's); with --method paired a "
                   "path is the LR image of the HR's region")
    g.add_argument("--learning-rate", type=float, default=None, help="the peak learning rate (as --lr RATE)")
    if not demo:
        g.add_argument("--hr", default=None, help="--method paired: the HR image or stack (instead of INPUT)")
    for opt in all_options().values():
        owners = ", ".join(m.name for m in METHODS.values() if m.option(opt.name) is not None)
        g.add_argument(f"--{opt.name.replace('_', '-')}", dest=opt.name, default=None, type=opt.type,
                       choices=list(opt.choices) if opt.choices else None,
                       help=f"{opt.help} (method {owners}; default: {opt.default})")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0): the same seed, data and options "
                   "give the same model on a CPU")
    g.add_argument("--val-every", type=int, default=None, help="validate on held-out planes every N steps")
    g.add_argument("--heldout", action="store_true",
                   help="after training, judge it on the stack's own sections: every other section is held out, a "
                   "short training with the same settings restores them from the rest (at twice the spacing), and "
                   "the gain over cubic on the real held-out sections is printed (JSON: quality.heldout_sections). "
                   "Costs --heldout-steps more steps; measured at 2F, so not yet calibrated to the gain at F")
    g.add_argument("--heldout-steps", type=int, default=None, metavar="N",
                   help="steps of the --heldout judge (default: the model's steps, at most 400)")
    g.add_argument("--checkpoint", default=None, help="checkpoint file (default: the output model)")
    g.add_argument("--resume", default=None, help="continue training from this model/checkpoint")


def _number_or_path(text: str):
    """A learning rate, or (not a number) the path of an LR image."""
    try:
        return float(text)
    except ValueError:
        return text


DEBAND_HELP = ("a trained model: filter each output plane laterally by its place between sections so that the "
               "planes between sections are as detailed as the sections (no bands with the section period; "
               "default on); --no-deband gives the network's output as it is")
UNCERTAINTY_HELP = (
    "also write, to PATH (.tif/.tiff or .zarr/.ome.zarr), where the xz and yz restorations disagree: |xz - yz| in "
    "the input's intensities on the output's grid (0 = they agree; trust bright places less). It restores both "
    "directions again: about the cost of a fused write. Needs a trained model"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emsr",
        description="Isotropic reconstruction of anisotropic 3D EM stacks: train on the stack itself "
        "(self-supervised), then restore every xz/yz plane.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"napari-emsr {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="shape, voxel size, factor and a reference-free anisotropy measure")
    _add_input(s)
    s.add_argument("--factor", type=float, default=None,
                   help="anisotropy factor F = z spacing / lateral spacing (default: from the voxel size)")
    s.add_argument("--axis", type=int, default=0, help="the anisotropic axis (default 0 = z)")
    s.add_argument("--fast", action="store_true", help="skip the anisotropy measure and the section-profile estimate")
    s.add_argument("--degradation", metavar="OUT.tif", default=None,
                   help="write real axial planes next to lateral planes degraded by each section profile (and by "
                   "--model's learned degradation) to OUT.tif, OUT.png and OUT.json, and compare their spectra")
    s.add_argument("--model", default=None, help="with --degradation: a model file whose degradation is shown too")
    s.add_argument("--overwrite", action="store_true", help="with --degradation: replace existing files")
    _add_common(s)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train a model on a stack (self-supervised), or on an LR and HR pair "
                       "(--method paired), and save it")
    _add_input(s, optional=True)
    s.add_argument("-o", "--output", required=True, help="model file to write (e.g. stack.emsr.pt)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _add_train(s)
    _add_common(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("apply", help="apply a saved model to a stack and write the isotropic volume")
    _add_input(s)
    s.add_argument("--model", required=True, help="model file from `emsr train` (or cubic/linear: interpolation only)")
    s.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr/.ome.zarr")
    s.add_argument("--fuse", default=None, help="restore xz planes, yz planes, or both averaged (xz,yz; default); "
                   "isotropic models only")
    s.add_argument("--factor", type=float, default=None, help="override the factor from the voxel size")
    s.add_argument("--enhance", action="store_true",
                   help="a paired model at the same resolution (denoise and sharpen HR data) instead of making the "
                   "xy planes s times finer (a paired model's default)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (an unfinished zarr export resumes without it)")
    s.add_argument("--scheduler", default=None, metavar="SPEC",
                   help="compute on a dask.distributed cluster: local, local:N (N worker processes here; default "
                   "one per GPU, else 1), a scheduler address (tcp://host:port), or a dask-jobqueue YAML file "
                   "({jobqueue: slurm, cores: 8, memory: 32GB, jobs: 4, ...}; needs pip install dask-jobqueue). "
                   "Workers read the input and write a zarr output: both must be on a file system they see")
    s.add_argument("--uncertainty", default=None, metavar="PATH", help=UNCERTAINTY_HELP)
    s.add_argument("--deband", action=argparse.BooleanOptionalAction, default=True, help=DEBAND_HELP)
    _add_common(s)
    s.set_defaults(func=cmd_apply)

    s = sub.add_parser("reconstruct", help="train on the stack, then apply: the one-command path")
    _add_input(s)
    s.add_argument("-o", "--output", required=True, help="output .tif/.tiff or .zarr/.ome.zarr")
    s.add_argument("--save-model", default=None, help="where to keep the trained model (default: next to the output)")
    s.add_argument("--fuse", default=None, help="xz, yz or xz,yz (both, averaged; default)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing output and model file (an unfinished zarr export resumes without it)")
    s.add_argument("--scheduler", default=None, metavar="SPEC",
                   help="train here, then write on a dask.distributed cluster (see `emsr apply --help`)")
    s.add_argument("--uncertainty", default=None, metavar="PATH", help=UNCERTAINTY_HELP)
    s.add_argument("--deband", action=argparse.BooleanOptionalAction, default=True, help=DEBAND_HELP)
    _add_train(s)
    _add_common(s)
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser(
        "demo", help="the whole job on bundled sample data (Janelia medulla FIB-SEM), scored against ground truth"
    )
    s.add_argument("--demo-factor", type=int, default=4, help="anisotropy factor to simulate (default 4)")
    s.add_argument("--demo-profile", default="point", choices=["point", "slab", "gaussian"],
                   help="how the sample stack is made (the training estimates it unless --profile is given)")
    s.add_argument("-o", "--output", default=None, help="also save the trained model here")
    _add_train(s, demo=True)
    _add_common(s)
    s.set_defaults(func=cmd_demo, fuse="xz,yz")
    return p


def main(argv: list[str] | None = None) -> int:
    import signal

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit ends in our clear error (EFBIG), not a killed process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.ExitStack() as locks:  # every output's lock, taken at the command's start, to its end
            args._locks = locks
            return int(args.func(args) or 0)
    except EMSRError as exc:
        print(f"emsr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
