"""Training from the command line: the trainer's config from the options, a progress bar, Ctrl-C that keeps the
model, a save that never loses it, and the optional judge on the stack's own sections."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EMSRError, InputError, OutputError
from .common import claim, learning_rate, method_options, open_input
from .progress import training_bar


def train_config(args, checkpoint: str | None = None):
    """The :class:`~napari_emsr.train.TrainConfig` the options describe."""
    from ..methods import get_method
    from ..train import TrainConfig

    method = get_method(args.method)
    given = {k: getattr(args, k) for k in ("steps", "minutes", "patch", "batch", "lr", "val_every")
             if getattr(args, k, None) is not None}
    return TrainConfig(
        factor=args.factor,
        axis=args.axis,
        method=method.name,
        net=args.net,
        size=args.size,
        options=method_options(args, method),
        device=args.device,
        seed=args.seed,
        preview_every=0,
        checkpoint=str(args.checkpoint) if args.checkpoint else checkpoint,
        **given,
    )


def _check_resumed(args, c) -> None:
    """--resume goes on with the model's network and options: any of them given otherwise is refused (they were
    dropped without a word). ``c``: the resumed trainer's configuration."""
    from ..methods import get_method

    asked = {"net": args.net, "size": args.size, **method_options(args, get_method(c.method))}
    have = {"net": c.net, "size": c.size, **(c.options or {})}
    # NOTE: "auto" and "judged" are resolved on the stack (to what the model keeps: fitted, gaussian ...), and a
    # paired model's LR image (--lr PATH) is an input, not a setting of the network
    differ = [f"--{k.replace('_', '-')} {v} (the model's: {have.get(k)})" for k, v in asked.items()
              if v is not None and v != have.get(k) and v not in ("auto", "judged") and k != "lr_image"]
    if differ:
        raise InputError(f"--resume goes on with the resumed model's own network and options, so {'; '.join(differ)} "
                         "would be dropped: leave them out, or train a new model (without --resume)")


def run_training(args, vol, out_model: Path | None):
    """Train with a progress bar; Ctrl-C keeps the model trained so far.

    Returns
    -------
    tuple
        (model, trainer, interrupted, last event).
    """
    from ..train import Trainer

    cfg = train_config(args, str(out_model) if out_model is not None else None)
    trainer = Trainer(vol, cfg, resume=args.resume)
    c = trainer.config
    if args.resume:
        _check_resumed(args, c)
    for path, what in ((out_model, "model file"), (cfg.checkpoint, "checkpoint")):
        if path is not None:  # room for the file, now that its size is known
            claim(args, path, what, folder=False, needed=trainer.model_bytes())
    if not args.quiet:
        budget = f"{c.minutes:g} min" if c.minutes else f"{c.steps} steps"
        if trainer.start_step:
            budget += f" more, from step {trainer.start_step}"
        profile = c.options.get("profile")
        sections = f", {profile} sections" if profile else ""
        print(f"training {c.method}: {c.net} ({c.size}) for F = {c.factor:g}{sections}, on {trainer.device}, {budget}",
              file=sys.stderr)
        for note in trainer.notes:
            print(note, file=sys.stderr)
    shown = len(trainer.notes)
    start = int(trainer.start_step)  # a resumed model's steps: --steps more are trained
    total = start + c.steps if not c.minutes else None
    bar = training_bar("train", total, args.quiet, initial=start)
    interrupted = False
    last = None
    stage = None
    post: dict[str, str] = {}  # the last validation's figure stays beside the loss until the next one
    try:
        for ev in trainer.run():
            last = ev
            if ev.stage_count > 1 and ev.stage != stage:  # a new stage: its own bar length and name
                stage = ev.stage
                bar.reset(total=ev.total if not c.minutes or ev.stage != "restore" else None)
                bar.set_description(f"train [{ev.stage} {ev.stage_index + 1}/{ev.stage_count}]")
                post = {}
                if not args.quiet and len(trainer.notes) > shown:  # what an earlier stage learned
                    for note in trainer.notes[shown:]:
                        bar.write(note, file=sys.stderr)
                    shown = len(trainer.notes)
            post["loss"] = f"{ev.loss:.4f}"
            if ev.gain is not None:
                post["vs cubic"] = f"{ev.gain:+.2f} dB"
            bar.set_postfix(post, refresh=False)  # before the count moves, so the line shows this step's loss
            bar.update(ev.step - bar.n)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    model = trainer.model
    if out_model is not None:
        made_by = getattr(args, "_made_by", None)
        if made_by is not None and not interrupted:  # this command's own model: a re-run uses it, not retrains
            model.config["made_by"] = made_by
        save_or_rescue(model, out_model)
    if interrupted:
        print(f"interrupted at step {trainer.step}; the model trained so far is saved in {out_model}", file=sys.stderr)
    return model, trainer, interrupted, last


def save_or_rescue(model, path: Path) -> Path:
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


def train_volume(args):
    """The volume the trainer learns from: the method's own inputs (:attr:`napari_emsr.methods.Method.inputs`, e.g.
    the HR of an LR/HR pair), else the input stack; refuses the pair's flags for a method that takes one stack."""
    from ..methods import METHODS, get_method

    lr_path = learning_rate(args)
    meth = get_method(args.method)
    if meth.inputs is not None:
        vol, settings = meth.inputs(input=args.input, hr=args.hr, lr=lr_path or getattr(args, "lr_image", None),
                                    factor=args.factor)
        for key, value in settings.items():
            setattr(args, key, value)
        return vol
    if lr_path or getattr(args, "hr", None):
        pairs = " or ".join(m.name for m in METHODS.values() if m.inputs is not None)
        raise InputError(f"--lr LR (an image) and --hr HR are the inputs of --method {pairs}; a learning rate is a "
                         "number (--lr 1e-3)")
    if not args.input:
        raise InputError("give the input stack (INPUT)")
    return open_input(args)


def heldout(args, vol, model, payload: dict) -> str:
    """With --heldout: judge ``model`` on the stack's real held-out sections (:func:`napari_emsr.heldout.estimate`);
    the figure goes into ``payload["quality"]["heldout_sections"]`` and the summary line returned."""
    if not getattr(args, "heldout", False):
        return ""
    from ..heldout import estimate

    steps = args.heldout_steps
    if steps is not None and steps < 1:
        raise InputError(f"--heldout-steps {steps}: give a positive number of steps (e.g. 300)")
    q = estimate(vol, model, steps=steps, device=getattr(args, "device", "auto") or "auto")
    payload.setdefault("quality", {})["heldout_sections"] = q.as_dict()
    return (f"\nestimated gain over cubic: {q.gain_db:+.2f} dB, give or take {q.error_db:.1f} dB (from "
            f"{q.sections} real held-out sections restored "
            f"from the others at {2 * q.factor:g}x spacing, {q.sections_db:+.2f} dB, and lateral planes degraded "
            f"like z, {q.lateral_db:+.2f} dB)" + (f"\n  {q.caveat}" if q.caveat else ""))
