"""How well the quality estimate (``napari_emsr.heldout.estimate``, what ``emsr ... --heldout`` prints) tracks the
true gain over cubic, and the calibration behind it.

For each stack (cut from a volume with isotropic ground truth, as ``bench_degradation.py`` cuts them) the default
method is trained, the estimate is computed from the stack alone (a judge trained at 2F on every other section and
scored on the real held-out ones; the model's gain on lateral planes degraded like z), and the true gain over
cubic is measured against the ground truth. One JSON file per run; ``--calibrate`` fits the estimate's two weights
by least squares on such files (from the development volume only) and prints the residuals; it also reads the run
files of ``bench_degradation.py --methods auto --heldout`` (the 10-minute rows).

Each run also records terms tried as additions to the estimate (none kept; docs/benchmarks.md, "What the
estimate's misses are made of"): the model's lateral gain with lines cut by profiles a little thicker, thinner,
softer and sharper than its own (``lateral_pert``; a thinner or sharper profile than 0 is the profile itself), and
with lines along x instead of y (``lateral_x_db``); with ``--fit-region`` its lateral gain over the profiles the
stack's spectrum cannot tell from the fit (and the true profile's, where the stack's is in the family); with
``--align`` the true gain after the best global z shift. ``--model`` measures a saved model again (``--save-model``)
without training it.

    python benchmarks/bench_heldout.py --gt ../shared/data/medulla_fibsem_iso10nm_ts1_250.tif --half dev \\
        --stack slab --factor 4 --steps 600 --json ts1_slab_F4.json
    python benchmarks/bench_heldout.py --calibrate ts1_*.json
    python benchmarks/bench_heldout.py --gt ../shared/data/medulla_fibsem_iso10nm_ts2_250.tif --half report \\
        --stack slab --factor 8 --steps 1400 --json ts2_slab_F8.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_emsr.degrade import GAUSSIAN_SOFTNESS

#: The named profiles as points of the continuous family (thickness, softness in units of F).
NAMED = {"point": (0.0, 0.0), "slab": (1.0, 0.0), "gaussian": (0.0, GAUSSIAN_SOFTNESS)}


def _forms(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Candidate estimators as linear least-squares problems: name -> (design matrix, coefficient names)."""
    s = np.array([r["sections_db"] for r in rows])
    lat = np.array([r["lateral_db"] for r in rows])
    forms = {"blend": (np.stack([s, lat], 1), ["sections", "lateral"]), "lateral": (lat[:, None], ["lateral"])}
    if all("sections_raw_db" in r for r in rows):
        # the same scored against the noisy sections and planes as they are (no noise taken off)
        sr = np.array([r["sections_raw_db"] for r in rows])
        lr = np.array([r["lateral_raw_db"] for r in rows])
        forms["blend-raw"] = (np.stack([sr, lr], 1), ["sections (raw)", "lateral (raw)"])
    if all("judge_lateral_db" in r for r in rows):
        j = np.array([r["judge_lateral_db"] for r in rows])
        # the model's lateral gain less the judge's shortfall on real sections (simulated minus real, at 2F)
        forms["gap"] = (np.stack([lat, j - s], 1), ["lateral", "judge lateral - sections"])
        forms["linear3"] = (np.stack([s, lat, j], 1), ["sections", "lateral", "judge lateral"])
    if all("lateral_pert" in r for r in rows):
        # how much of the lateral gain hangs on the fit being right: the model's lateral gain with the lines cut by
        # profiles a little thicker, thinner, softer and sharper than the one it was trained for
        pm = np.array([np.mean(list(r["lateral_pert"].values())) for r in rows])
        pw = np.array([min(r["lateral_pert"].values()) for r in rows])
        forms["perturbed"] = (np.stack([lat, lat - pm], 1), ["lateral", "lateral - perturbed mean"])
        forms["perturbed-worst"] = (np.stack([lat, lat - pw], 1), ["lateral", "lateral - perturbed worst"])
        forms["perturbed-mean"] = (pm[:, None], ["perturbed mean"])
        forms["blend-perturbed"] = (np.stack([s, lat, lat - pm], 1), ["sections", "lateral", "lateral - perturbed"])
        for key in sorted(set.intersection(*(set(r["lateral_pert"]) for r in rows))):
            pk = np.array([r["lateral_pert"][key] for r in rows])
            forms[f"perturbed-{key}"] = (np.stack([lat, lat - pk], 1), ["lateral", f"lateral - {key}"])
    if all(r.get("fit_region") for r in rows):
        # the model's lateral gain over the profiles the stack's spectrum cannot tell from the fit (fit_region)
        rmin = np.array([r["fit_region"]["min_db"] for r in rows])
        forms["region-min"] = (rmin[:, None], ["region min"])
        forms["region-mean"] = (np.array([r["fit_region"]["mean_db"] for r in rows])[:, None], ["region mean"])
        forms["lateral-region"] = (np.stack([lat, lat - rmin], 1), ["lateral", "lateral - region min"])
    if all("validation_db" in r for r in rows):
        v = np.array([r["validation_db"] for r in rows])
        # the same with the training's own held-out lateral planes (planes it never trained on)
        if "gap" in forms:
            forms["gap-validation"] = (np.stack([v, j - s], 1), ["validation", "judge lateral - sections"])
        forms["blend-validation"] = (np.stack([s, v], 1), ["sections", "validation"])
    return forms


def fit_region(lr, factor: float, model, planes, noise_var: float, *, tolerance: float = 0.10,
               stack_matched=None) -> dict:
    """How uncertain the section-profile fit is on this stack, and what that costs the model: the profiles of the
    fit's grid whose spectral distance (on the lateral lines the fit chose) is within ``tolerance`` of the best, and
    the model's lateral gain with lines cut by each (on ``planes``, the estimate's lateral planes). With the stack's
    true profile (``stack_matched``, a name or a pair; None when outside the family), also its distance relative to
    the best and the model's lateral gain with lines cut by it."""
    from napari_emsr.heldout import lateral_gains, model_profile
    from napari_emsr.profile_fit import FIT_PLANES, FIT_SOFTNESS, FIT_THICKNESS, _SpectrumMatch, fit_profile

    fit = fit_profile(lr, factor)
    m = _SpectrumMatch.of(lr, factor, planes=FIT_PLANES)  # the planes the fit compared, so distances are its own
    lines = fit.lateral_lines
    grid = {(t, s): m.distances((t, s))[lines] for t in FIT_THICKNESS for s in FIT_SOFTNESS}
    best = min(min(grid.values()), fit.distance)
    near = sorted({(fit.thickness, fit.softness)} | {k for k, d in grid.items() if d <= best * (1.0 + tolerance)})
    gains = {f"{t:.2f}/{s:.2f}": round(lateral_gains(model, planes, factor, factor, (t, s), device="cpu",
                                                     noise_var=noise_var)[0], 3) for t, s in near}
    prof = model_profile(model.config)
    out = {"lines": lines, "fit": list(NAMED[prof] if isinstance(prof, str) else prof), "best": round(best, 4),
           "near": gains,
           "min_db": min(gains.values()), "mean_db": round(float(np.mean(list(gains.values()))), 3)}
    if stack_matched is not None:
        tm = NAMED[stack_matched] if isinstance(stack_matched, str) else tuple(stack_matched)
        out["true_profile"] = [round(float(x), 3) for x in tm]
        out["true_distance_ratio"] = round(m.distances(tm)[lines] / best, 4)
        out["true_profile_gain_db"] = round(lateral_gains(model, planes, factor, factor, tm, device="cpu",
                                                          noise_var=noise_var)[0], 3)
    return out


def load_rows(path: str) -> list[dict]:
    """The calibration rows of a run file: this script's (one row), or ``bench_degradation.py --heldout``'s (one row
    per ``auto`` result with an estimate: the 10-minute runs)."""
    d = json.loads(Path(path).read_text())
    if "results" not in d:
        return [d] if "true_db" in d else []  # not a run file (a fit summary beside them)
    volume = "ts2" if "ts2" in d.get("command", "") else "ts1"
    rows = []
    for r in d["results"]:
        a = r["rows"].get("auto", {})
        h = a.get("heldout")
        if not h:
            continue
        rows.append({"volume": volume, "half": d["half"], "factor": r["factor"], "stack": r["stack"],
                     "steps": a.get("steps"), "true_db": a["psnr"] - r["rows"]["cubic"]["psnr"],
                     "sections_db": h["sections_gain_db"], "lateral_db": h["lateral_gain_db"],
                     "judge_lateral_db": h["judge_lateral_gain_db"]})
    return rows


def calibrate(files: list[str], check: list[str] | None = None) -> None:
    """Fit each candidate form on ``files`` (development volume) and print its residuals there and on ``check``."""
    rows = [r for f in files for r in load_rows(f)]
    held = [r for f in (check or []) for r in load_rows(f)]
    y = np.array([r["true_db"] for r in rows])
    for name, (a, coef) in _forms(rows).items():
        w, *_ = np.linalg.lstsq(a, y, rcond=None)
        print(f"\n{name}: " + ", ".join(f"{c} x {v:.2f}" for c, v in zip(coef, w))
              + f" (least squares on {len(rows)} runs)")
        print("| volume | half | F | stack | steps | sections | lateral | judge lateral | estimate | true | error |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for group in (rows, held):
            if not group:
                continue
            held_forms = _forms(group)
            if name not in held_forms:
                print(f"(not for the {len(group)} rows to check: their run files lack this form's terms)")
                continue
            ga = held_forms[name][0]
            for r, est in zip(group, ga @ w):
                jl = r.get("judge_lateral_db")
                print(f"| {r['volume']} | {r['half']} | {r['factor']} | {r['stack']} | {r['steps']} | "
                      f"{r['sections_db']:+.2f} | {r['lateral_db']:+.2f} | "
                      f"{'-' if jl is None else format(jl, '+.2f')} | {est:+.2f} | {r['true_db']:+.2f} | "
                      f"{est - r['true_db']:+.2f} |")


def main() -> None:
    from bench_degradation import DEFAULT_GT, aligned_psnr, cut, device_name, matched, score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT))
    ap.add_argument("--half", choices=("dev", "report"), default="report")
    ap.add_argument("--stack", default="point")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600, help="steps of the model being judged")
    ap.add_argument("--judge-steps", type=int, default=None, help="steps of the judge (default: the library's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score-crop", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--save-model", default=None, metavar="PATH", help="save the trained model here")
    ap.add_argument("--model", default=None, metavar="PATH",
                    help="judge this saved model (trained on the same stack) instead of training one")
    ap.add_argument("--calibrate", nargs="+", default=None, metavar="JSON",
                    help="fit the estimate's weights on these runs' files and print the residuals")
    ap.add_argument("--check", nargs="+", default=None, metavar="JSON",
                    help="with --calibrate: runs on the report volume, scored with the weights fitted on the others")
    ap.add_argument("--fit-region", action="store_true",
                    help="also the model's lateral gain for every profile of the fit's grid whose spectral distance "
                    "is within 10 %% of the best (how uncertain the fit is, and what that uncertainty costs)")
    ap.add_argument("--align", action="store_true", help="also the true gain after the best global z shift")
    a = ap.parse_args()
    if a.calibrate:
        calibrate(a.calibrate, a.check)
        return

    import tifffile
    import torch

    from napari_emsr.heldout import (
        LATERAL_WEIGHT,
        SECTIONS_WEIGHT,
        estimate,
        lateral_gains,
        lateral_planes,
        model_profile,
        noise_variance,
        split_sections,
    )
    from napari_emsr.io import as_volume
    from napari_emsr.model import load_model
    from napari_emsr.reconstruct import reconstruct
    from napari_emsr.train import TrainConfig, Trainer

    torch.set_num_threads(a.threads)
    gt = tifffile.imread(a.gt)
    h = gt.shape[0] // 2
    vol_gt = gt[:h] if a.half == "dev" else gt[h:]
    f = a.factor
    lr = cut(vol_gt, a.stack, f, 0)
    zmax = (lr.shape[0] - 1) * f + 1
    ny, nx = lr.shape[1:]
    c = a.score_crop
    ys, xs = slice((ny - c) // 2, (ny + c) // 2), slice((nx - c) // 2, (nx + c) // 2)
    ref = vol_gt[:zmax, ys, xs]
    vol = as_volume(lr, spacing=(10.0 * f, 10.0, 10.0))
    scored = as_volume(np.ascontiguousarray(lr[:, ys, xs]), spacing=(10.0 * f, 10.0, 10.0))
    cubic_rec = reconstruct(scored, "cubic", planes="fuse").compute()[:zmax]
    cubic = score(cubic_rec, ref, f)
    t0 = time.perf_counter()
    if a.model:
        model = load_model(a.model)
    else:
        trainer = Trainer(vol, TrainConfig(factor=f, steps=a.steps, seed=0, preview_every=0))
        for _ in trainer.run():
            pass
        model = trainer.model
        if a.save_model:
            model.save(a.save_model)
    train_s = time.perf_counter() - t0
    model_rec = reconstruct(scored, model, planes="fuse", device="cpu").compute()[:zmax]
    rec = score(model_rec, ref, f)
    t1 = time.perf_counter()
    q = estimate(vol, model, steps=a.judge_steps, device="cpu", threads=a.threads)
    estimate_s = time.perf_counter() - t1
    # the model's lateral gain without the noise correction (for calibrating either form)
    kept, _ = split_sections(lr)
    planes, prof = lateral_planes(kept), model_profile(model.config)
    lateral_raw, _ = lateral_gains(model, planes, f, f, prof, device="cpu", noise_var=0.0)
    # how much of the lateral gain hangs on the fitted profile being right (see _forms: "perturbed")
    t, sft = prof if isinstance(prof, tuple) else NAMED[prof]
    nv = noise_variance(planes)
    pert = {"thicker": (t + 0.3, sft), "thinner": (max(t - 0.3, 0.0), sft), "softer": (t, sft + 0.15),
            "sharper": (t, max(sft - 0.15, 0.0))}
    lateral_pert = {k: round(lateral_gains(model, planes, f, f, p, device="cpu", noise_var=nv)[0], 3)
                    for k, p in pert.items()}
    lateral_x = lateral_gains(model, planes.transpose(0, 2, 1), f, f, prof, device="cpu", noise_var=nv)[0]
    region = fit_region(lr, f, model, planes, nv, stack_matched=matched(a.stack)) if a.fit_region else None
    aligned, shifts = None, None
    if a.align:  # the true gain after each result's best global z shift (bench_degradation.aligned_psnr)
        cub_a, cub_shift = aligned_psnr(cubic_rec, ref, f)
        rec_a, rec_shift = aligned_psnr(model_rec, ref, f)
        aligned, shifts = round(rec_a - cub_a, 3), {"cubic": cub_shift, "model": rec_shift}
    out = {"volume": Path(a.gt).stem.split("_")[-2], "half": a.half, "factor": f, "stack": a.stack,
           "steps": model.step, "true_db": round(rec["psnr"] - cubic["psnr"], 3),
           "sections_db": round(q.sections_db, 3), "lateral_db": round(q.lateral_db, 3),
           "judge_lateral_db": round(q.judge_lateral_db, 3), "noise_sigma": round(q.noise_sigma, 3),
           "sections_raw_db": round(q.sections_raw_db, 3), "lateral_raw_db": round(lateral_raw, 3),
           "noise_share": round(q.noise_share, 3), "profile": [t, sft], "lateral_pert": lateral_pert,
           "lateral_x_db": round(lateral_x, 3), "fit_region": region, "true_aligned_db": aligned,
           "z_shifts": shifts,
           "validation_db": round(model.history[-1]["val_psnr"] - model.history[-1]["cubic_psnr"], 3),
           "estimate_db": round(q.gain_db, 3), "weights": [SECTIONS_WEIGHT, LATERAL_WEIGHT],
           "banding": rec["banding"], "train_s": None if a.model else round(train_s, 1),
           "estimate_s": round(estimate_s, 1),
           "device": device_name(), "date": str(date.today()), "command": "python " + " ".join(sys.argv)}
    print(f"| {out['volume']} {a.half} | {f} | {a.stack} | {model.step} | true {out['true_db']:+.2f} | estimate "
          f"{out['estimate_db']:+.2f} (sections {out['sections_db']:+.2f}, lateral {out['lateral_db']:+.2f}) | "
          f"error {out['estimate_db'] - out['true_db']:+.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
