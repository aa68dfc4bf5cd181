"""``emsr train``: train a model on a stack (or an LR/HR pair) and save it."""

from __future__ import annotations

from pathlib import Path

from ... import outputs
from ...errors import InputError
from ..common import claim, emit
from ..training import heldout, run_training, train_volume
from ..writing import model_exists


def run(args) -> int:
    source = args.input or args.hr
    if outputs.volume_suffix(args.output):
        raise InputError(f"-o {args.output} names an image, and `emsr train` saves a model there (e.g. -o "
                         "model.emsr.pt); to write the reconstructed volume, run `emsr reconstruct INPUT -o "
                         f"{args.output}`")
    out = outputs.check_output(args.output, args.overwrite, not_={"input": source})
    claim(args, out, "model file", folder=False)
    if args.checkpoint:
        outputs.check_model_path(Path(args.checkpoint), overwrite=args.overwrite, role="checkpoint",
                                 not_={"input": source, "model file": out}, resumed=args.resume,
                                 exists=model_exists(args, "checkpoint"))
        claim(args, args.checkpoint, "checkpoint", folder=False)
    vol = train_volume(args)
    model, trainer, interrupted, _ = run_training(args, vol, out)
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
        human += heldout(args, vol, model, payload)
    emit(args, payload, human)
    return 130 if interrupted else 0
