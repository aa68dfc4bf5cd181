"""Real anisotropic serial-section stacks, no ground truth: how isotropic is the result, and is it faithful?

For each stack (by default the two ssTEM stacks of ../shared/data: ISBI 2012, F = 12.5, and a CREMI crop,
F = 10) the script trains the default method for ``--minutes`` on the whole stack, reconstructs a central lateral
crop with the network (xz + yz fused) and with cubic interpolation, and prints

- the reference-free anisotropy ratio (lateral / axial FRC-free spectral cut-off, ``metrics.anisotropy``: about 1
  for an isotropic volume, up to about F for a stack as cut) of the input stack, of cubic and of the network;
- data consistency: PSNR of the reconstruction's planes at the input sections' z (integer positions only)
  against those sections (cubic passes through them exactly: infinite PSNR), and the mean intensity shift;
- banding (``metrics.section_banding``): lateral detail of the planes between sections over that of the planes
  at them (1: none), which the anisotropy ratio cannot see (bands are axial detail too).

    python benchmarks/bench_real_stacks.py --minutes 5
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np

from napari_emsr.io import as_volume, open_volume
from napari_emsr.metrics import anisotropy, psnr, section_banding
from napari_emsr.reconstruct import output_spacing, reconstruct
from napari_emsr.train import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT = [DATA / "isbi2012_sstem_train_30x512x512.tif", DATA / "cremi_crop_isovem_train_32x320x320.tif"]


def _ratio(volume, spacing) -> float:
    return float(anisotropy(volume, spacing=spacing, sample=8, rng=0)["ratio"])


def _consistency(rec: np.ndarray, stack: np.ndarray, factor: float) -> float:
    """PSNR of the reconstruction at the input sections' (integer) z against those sections."""
    idx = [i for i in range(stack.shape[0]) if abs(i * factor - round(i * factor)) < 1e-6]
    zs = [round(i * factor) for i in idx]
    return psnr(stack[idx].astype(np.float32), rec[zs].astype(np.float32), data_range=255.0)


def _save_png(path: Path, cubic: np.ndarray, net: np.ndarray) -> None:
    """The central xz plane of cubic interpolation and of the network, side by side (z down)."""
    from PIL import Image  # Pillow comes with napari and matplotlib

    y = cubic.shape[1] // 2
    gap = np.full((cubic.shape[0], 8), 255, np.uint8)
    both = np.concatenate([cubic[:, y, :], gap, net[:, y, :]], axis=1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(both).save(path)
    print(f"saved {path}")


def _budget(a, r) -> str:
    return f"{r['steps']} steps ({r['train_s']} s)" if a.steps else f"{a.minutes:g} min, {r['steps']} steps"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stacks", nargs="*", default=[str(p) for p in DEFAULT])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=None,
                    help="a step budget instead of --minutes (load-independent; all stages' default steps included)")
    ap.add_argument("--crop", type=int, default=256, help="lateral size of the reconstructed central crop")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--profile", default=None, help="section profile the training assumes (default: auto)")
    ap.add_argument("--png", default=None, help="folder for a PNG per stack: a central xz plane, cubic | network")
    a = ap.parse_args()

    rows = []
    for path in a.stacks:
        vol = open_volume(path)
        stack = np.asarray(vol.data)
        factor = vol.factor
        t0 = time.perf_counter()
        options = {"profile": a.profile} if a.profile else {}
        budget = {"steps": a.steps} if a.steps else {"minutes": a.minutes}
        trainer = Trainer(vol, TrainConfig(**budget, device=a.device, options=options))
        for _ in trainer.run():
            pass
        model = trainer.model
        train_s = time.perf_counter() - t0
        ny, nx = stack.shape[1:]
        c = min(a.crop, ny, nx)
        y0, x0 = (ny - c) // 2, (nx - c) // 2
        crop = as_volume(stack[:, y0 : y0 + c, x0 : x0 + c], spacing=vol.spacing)
        iso = output_spacing(crop)
        t0 = time.perf_counter()
        net = np.asarray(reconstruct(crop, model, planes="fuse", device=a.device).compute())
        rec_s = time.perf_counter() - t0
        cubic = np.asarray(reconstruct(crop, "cubic").compute())
        raw = np.asarray(reconstruct(crop, model, planes="fuse", device=a.device, deband=False).compute())
        row = {
            "stack": Path(path).name,
            "shape": list(stack.shape),
            "factor": round(factor, 2),
            "profile": model.config.get("profile"),
            "steps": model.step,
            "train_s": round(train_s),
            "reconstruct_s": round(rec_s),
            "ratio_input": _ratio(crop.data, vol.spacing),
            "ratio_cubic": _ratio(cubic, iso),
            "ratio_net": _ratio(net, iso),
            "consistency_db": _consistency(net, np.asarray(crop.data), factor),
            "banding_cubic": section_banding(cubic, factor)["ratio"],
            "banding_net": section_banding(net, factor)["ratio"],
            "banding_net_no_deband": section_banding(raw, factor)["ratio"],
            "consistency_db_no_deband": _consistency(raw, np.asarray(crop.data), factor),
            "detail_by_phase_net": [round(v, 2) for v in section_banding(net, factor)["by_phase"]],
            "shift": float(net.mean() - cubic.mean()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.png:
            _save_png(Path(a.png) / (Path(path).stem + "_xz.png"), cubic, net)
    print(
        "\n| stack | F | profile | training | anisotropy ratio: stack / cubic / network | consistency | "
        "banding cubic / network (no deband) | shift | date |"
    )
    for r in rows:
        print(
            f"| {r['stack']} | {r['factor']} | {r['profile']} | {_budget(a, r)} | "
            f"{r['ratio_input']:.2f} / {r['ratio_cubic']:.2f} / {r['ratio_net']:.2f} | {r['consistency_db']:.1f} dB | "
            f"{r['banding_cubic']:.2f} / {r['banding_net']:.2f} ({r['banding_net_no_deband']:.2f}) | "
            f"{r['shift']:+.2f} | {date.today()} |"
        )


if __name__ == "__main__":
    main()
