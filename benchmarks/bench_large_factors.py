"""Issue 11's table: large factors (F = 8, 12) on held-out medulla stacks, with bands and texture measured.

The medulla FIB-SEM (250^3, isotropic 10 nm) is split along z: z 0:125 to develop on, z 125:250 to report on
(``--half report``, the default; nothing was tuned on it). From the reported half, stacks are cut at each F with
``point`` (every F-th plane) or ``slab`` (a box of F) sections (``bench_degradation.cut``), and reconstructed by:

    cubic      interpolation only
    default    ``emsr reconstruct``'s defaults (the isotropic method, section profile fitted to the stack)
    context    the same with multi-slice context (N = 2: 5 neighbouring planes, fused by 3D convolutions in front of
               the default network; pairs ``context_pairs.ContextPairs``, network
               ``context_arch.ContextNet``; applied here by :func:`reconstruct_context`,
               with neighbours F planes apart)
    gpemsr     paper 003's three stages (codebook prior, indexer, restorer with prior fusion)

every trained method at the same number of training steps in all (``--steps``; gpemsr's are split between its
stages, ``--split``), or the same minutes (``--minutes``). Scored on a central lateral crop (``--score-crop``)
against the ground truth: PSNR, SSIM of xz planes, banding (:func:`napari_emsr.metrics.section_banding`; the
truth's value is printed), the spectral match of the restored axis to the lateral ones (RMS and mean log ratio,
dB, :func:`napari_emsr.metrics.spectral_match`) and the mean FRC of xz planes with the truth
(:func:`napari_emsr.metrics.plane_frc`). Training time is printed with every row (a shared CPU's seconds differ
from run to run; the step budget does not).

One invocation can run one case and one method, writing its rows to a JSON folder, so that slow rows run
separately; ``--table DIR`` prints the table of every row in the folder::

    python benchmarks/bench_large_factors.py --factor 8 --stacks point --methods cubic default --steps 120 --out r/
    python benchmarks/bench_large_factors.py --factor 8 --stacks point --methods gpemsr --steps 120 --out r/
    python benchmarks/bench_large_factors.py --table r/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_degradation import DEFAULT_GT, cut, device_name

from napari_emsr.io import as_volume
from napari_emsr.metrics import plane_frc, psnr, section_banding, spectral_match, ssim
from napari_emsr.reconstruct import reconstruct
from napari_emsr.train import TrainConfig, Trainer

METHODS = ("cubic", "default", "context", "gpemsr")
#: Neighbours on each side of the context method (the issue's N = 2).
CONTEXT = 2
COLUMNS = ("| F | stack | method | PSNR | dPSNR | SSIM xz | banding | spectrum rms / mean dB | FRC xz | steps "
           "| train s |")


def score(rec: np.ndarray, ref: np.ndarray, factor: int) -> dict:
    sm = spectral_match(rec)
    return {"psnr": round(psnr(ref, rec), 3), "ssim_xz": round(ssim(ref, rec, planes="xz"), 4),
            "banding": round(section_banding(rec, factor)["ratio"], 3), "spec_rms_db": round(sm["rms_db"], 2),
            "spec_ratio_db": round(sm["ratio_db"], 2), "frc_xz": round(plane_frc(ref, rec)["mean"], 4)}


def _register_context() -> None:
    """The benchmark's context method: multi-slice context pairs and network (not wired into ``reconstruct``:
    :func:`reconstruct_context` applies it here)."""
    from functools import partial

    from context_pairs import ContextPairs

    from napari_emsr.methods import Method, register_method
    from napari_emsr.methods.isotropic import ISOTROPIC
    from napari_emsr.nets import NETS

    NETS.setdefault("context", ("context_arch", "ContextNet"))

    class CentreValidation(ContextPairs):
        # NOTE: the trainer scores one-channel planes; the context network takes one plane as its own context.
        def validation(self):
            x, y = super().validation()
            return x[:, self.context], y

    register_method(Method(name="bench-context", description="isotropic with multi-slice context",
                           pairs=partial(CentreValidation, context=CONTEXT), net="context", size="small",
                           loss=ISOTROPIC.loss, order=ISOTROPIC.order, defaults=ISOTROPIC.defaults,
                           options=ISOTROPIC.options, loss_args=ISOTROPIC.loss_args), replace=True)


def reconstruct_context(volume, model, factor: int, stride: int | None = None) -> np.ndarray:
    """xz and yz planes restored with their neighbours ``stride`` (default F) planes apart, fused; uint8."""
    import torch
    from context_pairs import context_stacks

    from napari_emsr.geometry import output_positions
    from napari_emsr.interpolation import interpolate_axis

    net = model.network("cpu")
    stride = int(round(factor)) if stride is None else int(stride)
    a = model.norm.apply(np.asarray(volume.data))
    up = interpolate_axis(a, output_positions(a.shape[0], factor), model.order, axis=0)
    outs = []
    for planes, back in ((up.transpose(1, 0, 2), (1, 0, 2)), (up.transpose(2, 0, 1), (1, 2, 0))):
        st = context_stacks(np.ascontiguousarray(planes), CONTEXT, stride)
        res = np.empty(planes.shape, np.float32)
        with torch.inference_mode():
            for b in range(0, len(st), 8):
                res[b : b + 8] = net(torch.from_numpy(np.ascontiguousarray(st[b : b + 8])))[:, 0].numpy()
        outs.append(res.transpose(back))
    rec = model.norm.invert(0.5 * (outs[0] + outs[1]))
    return np.clip(np.rint(rec), 0, 255).astype(np.uint8)


def plan(method: str, steps: int, split: tuple[float, float]) -> dict:
    """The training config of a method for a budget of ``steps`` in all."""
    if method == "default":
        return {"steps": steps}
    if method == "context":
        _register_context()
        return {"steps": steps, "method": "bench-context", "val_every": 10**6}
    if method == "gpemsr":
        vq, ix = (max(1, int(round(steps * s))) for s in split)
        return {"method": "gpemsr", "steps": max(1, steps - vq - ix),
                "options": {"vqgan_steps": vq, "indexer_steps": ix}}
    raise SystemExit(f"unknown method {method!r}")


def run_case(gt_half: np.ndarray, factor: int, stack: str, methods: list[str], a, save=None) -> list[dict]:
    lr = cut(gt_half, stack, factor, a.seed)
    zmax = (lr.shape[0] - 1) * factor + 1
    ny, nx = lr.shape[1:]
    c = min(a.score_crop or max(ny, nx), ny, nx)
    ys, xs = slice((ny - c) // 2, (ny + c) // 2), slice((nx - c) // 2, (nx + c) // 2)
    ref = gt_half[:zmax, ys, xs]
    spacing = (10.0 * factor, 10.0, 10.0)
    vol = as_volume(lr, spacing=spacing)
    scored = as_volume(np.ascontiguousarray(lr[:, ys, xs]), spacing=spacing)
    rows = []
    base = {"factor": factor, "stack": stack, "half": a.half}
    if a.truth:
        rows.append({**base, "method": "truth", **score(ref, ref, factor), "steps": "-", "train_s": "-"})
    for m in methods:
        t0 = time.perf_counter()
        if m == "cubic":
            rec = reconstruct(scored, "cubic", planes="fuse").compute()[:zmax]
            rows.append({**base, "method": m, **score(rec, ref, factor), "steps": "-", "train_s": "-"})
        else:
            cfg = plan(m, a.steps, tuple(a.split))
            if a.minutes:
                cfg.update(minutes=a.minutes, steps=10**6)
            saved = Path(a.models) / f"{factor}_{stack}_{m}_{a.half}.pt" if a.models else None
            resume = saved if saved is not None and saved.exists() else None
            if resume is not None:  # a chained run: the finished stages load, the restorer trains --steps more
                cfg["steps"] = a.steps
            trainer = Trainer(vol, TrainConfig(factor=factor, seed=a.seed, preview_every=0, **cfg), resume=resume)
            for _ in trainer.run():
                pass
            train_s = time.perf_counter() - t0
            model = trainer.model
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                model.save(saved)
            if m == "context":
                rec = reconstruct_context(scored, model, factor)[:zmax]
            else:
                rec = reconstruct(scored, model, planes="fuse", device="cpu").compute()[:zmax]
            stages = {s["name"]: s.get("trained_steps") for s in model.config.get("stages", [])}
            steps = "+".join(str(v) for v in [*stages.values(), model.step])
            rows.append({**base, "method": m, **score(rec, ref, factor), "steps": steps,
                         "train_s": round(train_s, 1), "notes": trainer.notes})
        print(json.dumps(rows[-1]), flush=True)
        if save is not None:
            save(rows)
    return rows


def table(rows: list[dict]) -> list[str]:
    out = [COLUMNS, "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(("truth", *METHODS))}
    rows = sorted(rows, key=lambda r: (r["factor"], r["stack"], order.get(r["method"], 99)))
    cubic = {(r["factor"], r["stack"]): r["psnr"] for r in rows if r["method"] == "cubic"}
    for r in rows:
        c = cubic.get((r["factor"], r["stack"]))
        gain = "-" if c is None or r["method"] in ("cubic", "truth") else f"{r['psnr'] - c:+.2f}"
        psnr_s = "inf" if r["method"] == "truth" else f"{r['psnr']:.2f}"
        out.append(f"| {r['factor']} | {r['stack']} | {r['method']} | {psnr_s} | {gain} | {r['ssim_xz']:.3f} | "
                   f"{r['banding']:.2f} | {r['spec_rms_db']:.1f} / {r['spec_ratio_db']:+.1f} | {r['frc_xz']:.3f} | "
                   f"{r['steps']} | {r['train_s']} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT))
    ap.add_argument("--half", choices=("dev", "report"), default="report",
                    help="report: stacks from z 125:250; dev: z 0:125")
    ap.add_argument("--factor", type=int, nargs="+", default=[8, 12])
    ap.add_argument("--stacks", nargs="+", default=["point", "slab"], choices=("point", "slab"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--steps", type=int, default=300, help="training steps of each trained method, all stages")
    ap.add_argument("--split", type=float, nargs=2, default=[0.3, 0.2],
                    help="gpemsr: the shares of --steps given to the VQGAN and to the indexer (the rest: restorer)")
    ap.add_argument("--minutes", type=float, default=None, help="a time budget per training instead of --steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--score-crop", type=int, default=128, help="score a central lateral crop of this size")
    ap.add_argument("--truth", action="store_true", help="also print the ground truth's own banding and spectrum")
    ap.add_argument("--models", default=None, metavar="DIR",
                    help="keep each trained model in DIR and, when one is there, resume it for --steps more restorer "
                    "steps: a budget too long for one invocation in several")
    ap.add_argument("--out", default=None, help="folder: each invocation writes its rows there as one JSON file")
    ap.add_argument("--table", default=None, metavar="DIR", help="print the table of every JSON file in DIR")
    a = ap.parse_args()
    if a.table:
        rows, meta = [], set()
        for f in sorted(Path(a.table).glob("*.json")):
            d = json.loads(f.read_text())
            rows += d["rows"]
            meta.add(f"{d['device']}; {d['date']}; budget {d['budget']}")
        print("\n".join(table(rows)))
        print("\n" + "\n".join(sorted(meta)))
        return

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    gt = tifffile.imread(a.gt)
    half = gt.shape[0] // 2
    gt_half = gt[half:] if a.half == "report" else gt[:half]
    budget = f"{a.minutes} min" if a.minutes else f"{a.steps} steps"
    dev = device_name()
    done: list[dict] = []

    def save(rows: list[dict]) -> None:  # after every row, so that a run cut short keeps what it measured
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            chained = "_chained" if a.models else ""
            name = f"{'-'.join(map(str, a.factor))}_{'-'.join(a.stacks)}_{'-'.join(a.methods)}_{a.half}{chained}.json"
            (out / name).write_text(json.dumps({"device": dev, "date": str(date.today()), "budget": budget,
                                                "command": " ".join(sys.argv), "rows": done + rows}, indent=1))

    for factor in a.factor:
        for stack in a.stacks:
            done += run_case(gt_half, factor, stack, a.methods, a, save)
    print("\n".join(table(done)))
    print(f"\ndevice: {dev}; date {date.today()}; half: {a.half}; budget: {budget}; "
          f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
