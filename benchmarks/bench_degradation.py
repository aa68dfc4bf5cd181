"""Issue 9's table: how much of the supervised ceiling each way of simulating the sections reaches, on held-out data.

The medulla FIB-SEM (250^3, isotropic 10 nm) is split along z: one half to develop on, the other to report on
(``--half report``, the default, is z 125:250; nothing was tuned on it). From the chosen half, stacks are cut with
section profiles the fixed models do not assume, at F = 4 and 8:

    point       every F-th plane
    slab        a box of F (serial sections)
    gauss1.5    a Gaussian of FWHM 1.5 F
    slab0.7     a slab of 0.7 F
    slab-tail   a slab of F plus a one-sided exponential tail (decay 0.5 F, 30 % of the signal): partial
                interaction depth, asymmetric, outside the fitted family
    slab-poisson  a slab of F, then Poisson noise (about 40 photons at mid grey)

(``cut`` also takes ``<stack>-poisson[N]``, any stack above then Poisson noise of N photons at mid grey, 40 when
N is not given: the estimate's calibration rows, ``bench_heldout.py --stack``; ``--stacks`` here takes them too,
with the matched kernel of the stack before the noise.)

and reconstructed (xz + yz fused, the default network) by: cubic; the matched fixed kernel (the ideal, where the
profile is in the family); a mismatched fixed kernel (point for thick stacks, slab for point); ``auto`` before
issue 9 (the three-way estimate, ``old_profile.estimate_profile``); ``learned`` (paper 001's CycleGAN,
its steps inside the same budget); the new default (``auto``: the fitted profile); and the supervised ceiling: the
same network for the same budget, trained on real axial planes of the *other* half (input: the other half's stack
cut the same way, interpolated; target: its ground truth). Scored on the reported half against its ground truth:
PSNR, SSIM on xz planes, banding (1 = the ground truth's detail between sections).

    python benchmarks/bench_degradation.py --factor 4 8 --stacks slab gauss1.5 --minutes 3
    python benchmarks/bench_degradation.py --steps 300 --degradation-steps 150   # load-independent budget

Prints one markdown row per stack and method, the share of the ceiling's gain, and a JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import sys
import time
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import tifffile
from old_profile import estimate_profile

from napari_emsr.degrade import GAUSSIAN_SOFTNESS, section_blur
from napari_emsr.geometry import output_positions
from napari_emsr.interpolation import interpolate_axis
from napari_emsr.io import as_volume
from napari_emsr.methods import Method, get_method, register_method
from napari_emsr.metrics import psnr, section_banding, ssim
from napari_emsr.reconstruct import reconstruct
from napari_emsr.train import TrainConfig, Trainer

DEFAULT_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "medulla_fibsem_iso10nm_ts1_250.tif"
STACKS = ("point", "slab", "gauss1.5", "slab0.7", "slab-tail", "slab-poisson")
SIGMA_PER_FWHM = GAUSSIAN_SOFTNESS
#: The matched training profile of each stack (None: outside every fixed and fitted profile).
MATCHED = {"point": "point", "slab": "slab", "gauss1.5": (0.0, 1.5 * SIGMA_PER_FWHM), "slab0.7": (0.7, 0.0),
           "slab-tail": None, "slab-poisson": "slab"}


def split_stack(name: str) -> tuple[str, int | None]:
    """A stack name as (the stack cut before any noise, photons of Poisson noise at mid grey or None):
    ``point-poisson80`` -> ``("point", 80)``, ``slab-poisson`` -> ``("slab", 40)``, ``slab-tail`` -> ``("slab-tail",
    None)``."""
    variant = re.fullmatch(r"(.+)-poisson(\d*)", name)
    return (variant.group(1), int(variant.group(2) or 40)) if variant else (name, None)


def stack_name(name: str) -> str:
    """``--stacks`` argument: a name of :data:`STACKS`, or one of them followed by ``-poisson[N]`` (N >= 1)."""
    base, n = split_stack(name)
    if name in STACKS or (n is not None and n >= 1 and base in STACKS and split_stack(base)[1] is None):
        return name
    raise argparse.ArgumentTypeError(f"unknown stack {name!r}: one of {', '.join(STACKS)}, or one of them "
                                     "(without noise) followed by -poisson or -poissonN (N >= 1 photons at mid grey)")


def matched(stack: str):
    """The matched training profile of a stack name (a ``-poisson[N]`` variant: that of its stack)."""
    return MATCHED[split_stack(stack)[0]]


def cut(gt: np.ndarray, stack: str, factor: int, seed: int = 0) -> np.ndarray:
    """An anisotropic uint8 stack from isotropic ``gt``: section i centred on ground-truth z = i * F."""
    v = gt.astype(np.float32)
    photons = None
    stack, n = split_stack(stack)
    if n is not None:
        # slab-poisson, and the calibration variants (bench_heldout.py): any stack above, then Poisson noise of N
        # photons at mid grey ("point-poisson", "gauss1.5-poisson80"; 40 when N is not given)
        if n < 1:
            raise SystemExit("a -poissonN stack needs N >= 1 photons at mid grey")
        photons = n / 128.0
    if stack in ("point", "slab"):
        b = section_blur(v, "point" if stack == "point" else "slab", factor, axis=0)
    elif stack == "gauss1.5":
        b = section_blur(v, (0.0, 1.5 * SIGMA_PER_FWHM), factor, axis=0)
    elif stack == "slab0.7":
        b = section_blur(v, (0.7, 0.0), factor, axis=0)
    elif stack == "slab-tail":
        from scipy import ndimage

        box = section_blur(v, "slab", factor, axis=0)
        n = int(math.ceil(3 * factor))
        tail = np.exp(-np.arange(1, n + 1) / (0.5 * factor))
        k = np.concatenate([np.zeros(n), [0.0], tail / tail.sum()])  # looks into depth: z + 1 ... z + n
        b = 0.7 * box + 0.3 * ndimage.convolve1d(box, k[::-1], axis=0, mode="mirror")
    else:
        raise SystemExit(f"unknown stack {stack!r}")
    out = b[::factor]
    if photons is not None:
        out = np.random.default_rng(seed).poisson(np.clip(out, 0, None) * photons) / photons
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class AxialPairs:
    """The supervised ceiling's pair-maker: real axial planes of another volume and its stack, interpolated."""

    def __init__(self, ctx, lr: np.ndarray, gt: np.ndarray, factor: int) -> None:
        import torch

        from napari_emsr.nets import grid_of

        self._torch, self.ctx = torch, ctx
        self.factor = int(factor)
        self.first_row = self.section_grid = grid_of(ctx.train.get("net") or "rescnn") == "sections"
        pos = output_positions(lr.shape[0], factor)
        up = interpolate_axis(lr.astype(np.float32), pos, order=3, axis=0)
        n = min(len(up), len(gt))
        x, y = ctx.norm.apply(up[:n]), ctx.norm.apply(gt[:n].astype(np.float32))
        # xz and yz planes: (planes, z, lateral)
        self.x = np.concatenate([np.moveaxis(x, 1, 0), np.moveaxis(x, 2, 0)]).astype(np.float32)
        self.y = np.concatenate([np.moveaxis(y, 1, 0), np.moveaxis(y, 2, 0)]).astype(np.float32)
        rng = np.random.default_rng(1)
        self._val = self._crops(16, rng)
        self.info = {"profile": "supervised", "notes": ["supervised on real axial planes of the other half"]}

    def _crops(self, n, rng):
        p = self.ctx.patch
        k = rng.integers(0, len(self.x), n)
        zs = rng.integers(0, self.x.shape[1] - p + 1, n)
        if self.first_row:  # a section-grid network: every crop starts with a section
            zs = (zs // self.factor) * self.factor
        cs = rng.integers(0, self.x.shape[2] - p + 1, n)
        xs = np.stack([self.x[a, b : b + p, c : c + p] for a, b, c in zip(k, zs, cs)])
        ys = np.stack([self.y[a, b : b + p, c : c + p] for a, b, c in zip(k, zs, cs)])
        flip = rng.random(n) < 0.5
        xs[flip], ys[flip] = xs[flip][:, :, ::-1], ys[flip][:, :, ::-1]
        return xs, ys

    def batch(self, n):
        x, y = self._crops(n, self.ctx.rng)
        t = self._torch
        return t.from_numpy(x)[:, None].to(self.ctx.device), t.from_numpy(y)[:, None].to(self.ctx.device)

    def validation(self):
        return self._val


METHODS = ("matched", "mismatched", "old-auto", "learned", "auto", "judged", "ceiling")


def fixed_profile(method: str) -> tuple[float, float] | None:
    """``(T, S)`` of a ``fitted:T/S`` method (a fixed profile of the continuous family), else None."""
    if not method.startswith("fitted:"):
        return None
    t, s = (float(v) for v in method.split(":", 1)[1].split("/"))
    return t, s


def _method(text: str) -> str:
    """An argparse type: a name of :data:`METHODS` or ``fitted:T/S``."""
    try:
        if text in METHODS or fixed_profile(text) is not None:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"unknown method {text!r}: choose {', '.join(METHODS)} or fitted:T/S")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} threads)"


def score(rec: np.ndarray, ref: np.ndarray, factor: int, align: bool = False) -> dict:
    out = {"psnr": round(psnr(ref, rec), 3), "ssim_xz": round(ssim(ref, rec, planes="xz"), 4),
           "banding": round(section_banding(rec, factor)["ratio"], 3),
           "mean_shift": round(float(rec.mean(dtype=np.float64) - ref.mean(dtype=np.float64)), 2)}
    if align:
        out["psnr_aligned"], out["z_shift"] = aligned_psnr(rec, ref, factor)
    return out


def aligned_psnr(rec: np.ndarray, ref: np.ndarray, factor: int) -> tuple[float, float]:
    """PSNR after the best global sub-voxel z shift of ``rec`` (searched within half a section either way).

    An asymmetric section profile (``slab-tail``) puts each section's centre of mass off its nominal z. Nothing in
    the stack can reveal that offset (shifting the whole sectioning grid and shifting the specimen give the same
    stack), so a self-supervised method restores the volume up to it, while the supervised ceiling learns it from
    the ground truth. Scoring every method after its best shift compares the restored *shape* alone; the z band
    of ``factor`` planes at either end is left out of this score so the shift never reaches past the volume.
    """
    from scipy import ndimage

    rec = np.asarray(rec, np.float32)
    m = int(factor)
    core = (slice(m, rec.shape[0] - m),)

    def at(d: float) -> float:
        moved = rec if d == 0 else ndimage.shift(rec, (d, 0, 0), order=1, mode="nearest")
        return psnr(ref[core], moved[core])

    grid = np.arange(-factor / 2, factor / 2 + 1e-6, 0.5)
    vals = [at(float(d)) for d in grid]
    best = float(grid[int(np.argmax(vals))])
    fine = np.arange(best - 0.375, best + 0.376, 0.125)
    fvals = [at(float(d)) for d in fine]
    i = int(np.argmax(fvals))
    return round(float(fvals[i]), 3), round(float(fine[i]), 3)


def _save(folder: str, name: str, method: str, rec, lr, ref, options: dict) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}_{method}.npy", np.asarray(rec, np.float32))
    (out / f"{name}_{method}.json").write_text(json.dumps({"options": options}, default=str))
    if not (out / f"{name}_lr.npy").exists():
        np.save(out / f"{name}_lr.npy", np.asarray(lr))
        np.save(out / f"{name}_ref.npy", np.asarray(ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT))
    ap.add_argument("--half", choices=("dev", "report"), default="report",
                    help="report: stacks from z 125:250, ceiling trained on z 0:125; dev: the reverse")
    ap.add_argument("--factor", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--stacks", nargs="+", default=list(STACKS), type=stack_name, metavar="STACK",
                    help=f"{', '.join(STACKS)}, or one of them followed by -poisson[N] (default: all of them)")
    ap.add_argument("--methods", nargs="+", type=_method,
                    default=["matched", "mismatched", "old-auto", "learned", "auto", "ceiling"],
                    help="also judged, and fitted:T/S (a fixed profile of the continuous family: slab T F with "
                    "Gaussian edges S F, e.g. fitted:0.75/0.2)")
    ap.add_argument("--minutes", type=float, default=None, help="time budget of each training, all stages")
    ap.add_argument("--steps", type=int, default=300, help="restorer steps when --minutes is not given")
    ap.add_argument("--degradation-steps", type=int, default=None, help="steps of the learned degradation")
    ap.add_argument("--net", default=None)
    ap.add_argument("--size", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-crop", type=int, default=128,
                    help="score on this central lateral crop (y, x) of the reported half (training sees the whole "
                    "stack); 0: all of it")
    ap.add_argument("--align", action="store_true",
                    help="also score each result after its best global z shift (see aligned_psnr)")
    ap.add_argument("--heldout", action="store_true",
                    help="also print each trained row's held-out-section figure (napari_emsr.heldout.estimate: a "
                    "judge at 2F on every other section of the stack, scored on the real sections between)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--save", default=None,
                    help="also save each row's restored crop, the scored stack crop and its reference here (.npy), "
                    "for checks on the outputs without training again")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    gt_all = tifffile.imread(a.gt)
    half = gt_all.shape[0] // 2
    report, other = (gt_all[half:], gt_all[:half]) if a.half == "report" else (gt_all[:half], gt_all[half:])
    results = []
    dev = device_name()
    print("| F | stack | method | trained as | PSNR | SSIM xz | dPSNR | dSSIM | banding | % of ceiling | steps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for factor in a.factor:
        for stack in a.stacks:
            lr = cut(report, stack, factor, a.seed)
            lr_other = cut(other, stack, factor, a.seed + 1)
            n = lr.shape[0]
            zmax = (n - 1) * factor + 1
            ny, nx = lr.shape[1:]
            c = a.score_crop or max(ny, nx)
            ys, xs = slice((ny - min(c, ny)) // 2, (ny + min(c, ny)) // 2), slice((nx - min(c, nx)) // 2,
                                                                                  (nx + min(c, nx)) // 2)
            ref = report[:zmax, ys, xs]
            vol = as_volume(lr, spacing=(10.0 * factor, 10.0, 10.0))
            scored = as_volume(np.ascontiguousarray(lr[:, ys, xs]), spacing=(10.0 * factor, 10.0, 10.0))
            rows: dict[str, dict] = {}
            rows["cubic"] = {**score(reconstruct(scored, "cubic", planes="fuse").compute()[:zmax], ref, factor,
                                           a.align),
                             "as": "-"}
            old = estimate_profile(lr, factor).profile
            plan = {}
            for m in a.methods:
                if m == "matched":
                    if matched(stack) is None:
                        continue
                    prof = matched(stack)
                    plan[m] = ({"profile": prof} if isinstance(prof, str)
                               else {"profile": "fitted", "thickness": prof[0], "softness": prof[1]})
                elif m == "mismatched":
                    plan[m] = {"profile": "slab" if split_stack(stack)[0] == "point" else "point"}
                elif m == "old-auto":
                    plan[m] = {"profile": old}
                elif m == "learned":
                    plan[m] = {"profile": "learned"}
                    if a.degradation_steps:
                        plan[m]["degradation_steps"] = a.degradation_steps
                elif m == "auto":
                    plan[m] = {}
                elif m == "judged":
                    plan[m] = {"profile": "judged"}
                elif m == "ceiling":
                    plan[m] = None
                else:  # fitted:T/S, a fixed profile of the continuous family (checked by _method)
                    t, sft = fixed_profile(m)
                    plan[m] = {"profile": "fitted", "thickness": t, "softness": sft}
            for m, opts in plan.items():
                cfg = dict(factor=factor, seed=a.seed, net=a.net, size=a.size, preview_every=0)
                cfg.update({"minutes": a.minutes, "steps": 10**6} if a.minutes else {"steps": a.steps})
                if opts is None:  # the supervised ceiling, same network and budget
                    base = get_method("isotropic")
                    register_method(Method(name="bench-supervised", description="supervised ceiling",
                                           pairs=partial(AxialPairs, lr=lr_other, gt=other, factor=factor),
                                           net=base.net, size=base.size, loss=base.loss, order=base.order,
                                           defaults=base.defaults, options=()), replace=True)
                    cfg["method"] = "bench-supervised"
                else:
                    cfg["options"] = opts
                t0 = time.perf_counter()
                trainer = Trainer(vol, TrainConfig(**cfg))
                if a.minutes:  # what the trainer did before its run (judges of --profile judged) counts in the budget
                    left = max(a.minutes - (time.perf_counter() - t0) / 60.0, 0.05)
                    trainer.config = dataclasses.replace(trainer.config, minutes=left)
                for _ in trainer.run():
                    pass
                train_s = time.perf_counter() - t0
                model = trainer.model
                rec = reconstruct(scored, model, planes="fuse", device="cpu").compute()[:zmax]
                o = model.config.get("options", {})
                trained_as = o.get("profile", "supervised")
                if trained_as == "fitted":
                    trained_as = f"fitted {o.get('thickness'):.2f}/{o.get('softness'):.2f}"
                if trained_as == "learned":
                    d = model.config.get("degradation", {})
                    trained_as = f"learned (FWHM {d.get('fwhm')}, spread {d.get('spread')})"
                if "profile_judged" in model.config:
                    trained_as += " (judged)"
                held, held_parts = None, None
                if a.heldout and opts is not None:
                    from napari_emsr.heldout import estimate

                    q = estimate(vol, model, device="cpu")
                    held, held_parts = q.gain_db, q.as_dict()
                if a.save:
                    _save(a.save, f"F{factor}_{stack}", m, rec, lr[:, ys, xs], ref, o)
                rows[m] = {**score(rec, ref, factor, a.align), "as": trained_as, "steps": model.step,
                           "heldout_db": held, "heldout": held_parts,
                           "stage_steps": {s["name"]: s.get("trained_steps") for s in model.config.get("stages", [])},
                           "train_s": round(train_s, 1)}
            cub = rows["cubic"]
            ceil_gain = rows["ceiling"]["psnr"] - cub["psnr"] if "ceiling" in rows else None
            for m, r in rows.items():
                gain = r["psnr"] - cub["psnr"]
                share = f"{100 * gain / ceil_gain:.0f} %" if ceil_gain and m != "cubic" else "-"
                r["share_of_ceiling"] = None if share == "-" else round(gain / ceil_gain, 3)
                aligned = ""
                if a.align:
                    ag = r["psnr_aligned"] - cub["psnr_aligned"]
                    ac = (rows["ceiling"]["psnr_aligned"] - cub["psnr_aligned"]) if "ceiling" in rows else None
                    ashare = f"{100 * ag / ac:.0f} %" if ac and m != "cubic" else "-"
                    aligned = f" aligned: {r['psnr_aligned']:.2f} ({r['z_shift']:+.3f} z) {ag:+.2f} {ashare} |"
                held = f" held-out sections: {r['heldout_db']:+.2f} |" if r.get("heldout_db") is not None else ""
                print(f"| {factor} | {stack} | {m} | {r['as']} | {r['psnr']:.2f} | {r['ssim_xz']:.3f} | {gain:+.2f} | "
                      f"{r['ssim_xz'] - cub['ssim_xz']:+.3f} | {r['banding']:.2f} | {share} | {r.get('steps', '-')} |"
                      + aligned + held, flush=True)
            results.append({"factor": factor, "stack": stack, "old_auto": old, "rows": rows})
    budget = f"{a.minutes} min" if a.minutes else f"{a.steps} restorer steps"
    print(f"\ndevice: {dev}; date {date.today()}; half: {a.half}; budget: {budget}; command: "
          f"python {' '.join(sys.argv)}")
    payload = {"device": dev, "date": str(date.today()), "half": a.half, "budget": budget,
               "command": " ".join(sys.argv), "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(payload, indent=1))
    print(json.dumps(payload))


if __name__ == "__main__":
    main()
