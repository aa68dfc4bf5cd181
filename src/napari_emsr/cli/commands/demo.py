"""``emsr demo``: the whole job on the bundled sample, scored against its ground truth."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...errors import InputError
from ..common import claim, emit, learning_rate, say
from ..progress import TaskProgress
from ..training import run_training


def run(args) -> int:
    import numpy as np

    from ...metrics import psnr, ssim
    from ...reconstruct import reconstruct
    from ...sample import ATTRIBUTION, load_sample

    if learning_rate(args):
        raise InputError("--lr takes a learning rate (a number, e.g. 1e-3) here")
    claim(args, args.output, "model file", folder=False)
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
    model, trainer, interrupted, _ = run_training(args, aniso, Path(args.output) if args.output else None)
    if args.output and not interrupted:
        say(args, f"saved the trained model to {args.output}")
    ref = np.asarray(gt.data)
    rows = {}
    candidates = (("linear", "linear"), ("cubic", "cubic"), (f"emsr ({model.config['net']})", model))
    say(args, "scoring: the sample restored by linear and cubic interpolation and by the trained network, each "
        "compared with the ground truth (PSNR, SSIM of xz planes)")
    for k, (name, m) in enumerate(candidates, start=1):
        what = "the trained network, xz and yz planes fused" if m is model else f"{name} interpolation"
        say(args, f"[{k}/{len(candidates)}] reconstructing {tuple(ref.shape)} with {what}")
        with TaskProgress(f"reconstruct {name}", quiet=args.quiet):
            rec = np.asarray(reconstruct(aniso, m, planes="fuse" if m is model else "xz", device=args.device)
                             .compute())
        rec = rec[: ref.shape[0]]
        say(args, f"[{k}/{len(candidates)}] scoring {name} against the ground truth")
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
    emit(args, payload, "\n".join(lines))
    return 0
