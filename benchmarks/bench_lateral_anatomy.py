"""What the quality estimate's lateral term misses, measured against the ground truth (docs/benchmarks.md, "What
the lateral term misses").

For saved models trained on stacks cut from a volume with isotropic ground truth (``bench_heldout.py --save-model``,
named ``{volume}_{half}_{stack}_F{factor}_{steps}.emsr.pt``), each squared error behind the estimate is split into
its parts, one JSON line per model:

- cubic interpolation's error from the tissue alone (``I_*``: the noise's share measured by running the same
  pipeline on pure noise of the stack's variance and taken off) on the lateral planes degraded like z at F
  (``I_L``, along y; ``I_Lx`` along x), against the ground truth on real axial planes (``I_ax``), on the real
  held-out sections at 2F (``I_S``) and on the lateral planes at 2F scored as the held-out sections are (``I_JL``,
  ``I_JLx``);
- the model's and cubic's squared errors on the lateral planes at F (``R_L``, ``C_L``, noise variance taken off as
  :func:`napari_emsr.heldout.lateral_gains` does) and, against the ground truth, on the axial planes (``R_ax``,
  ``C_ax`` on the planes between sections; ``*_all`` on all);
- the covariance of each with the planes' own noise (``covR``, ``covC``), measured by perturbation: the planes
  carry the stack's noise, blurred by the profile into the sampled rows, so the input shares noise with the rows
  it is scored on;
- the model's residual noise per unit of input noise variance (``Nr25``, ``Nr50``: the output's change when noise
  of a quarter / half of the stack's variance is added to its input, per that share).

``--fit`` reads such lines and prints the correlations and fits the section reports.

    python benchmarks/bench_lateral_anatomy.py --models DIR/*.emsr.pt --json terms.jsonl --threads 1
    python benchmarks/bench_lateral_anatomy.py --fit terms.jsonl --runs benchmarks/results/2026-12-07-estimate-terms
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pipeline(v: np.ndarray, k, step: int, nv: float, seed: int):
    """Blur ``v`` (z first) by ``k``, sample every ``step``, top the sampled rows up to ``nv`` of white noise as
    :func:`napari_emsr.heldout.lateral_gains` does, and interpolate back (cubic): (blurred, sampled, cubic)."""
    from scipy import ndimage

    from napari_emsr.interpolation import interpolate_axis

    blurred = ndimage.convolve1d(v, k, axis=0, mode="mirror") if k is not None else v
    sampled = blurred[::step].copy()
    ksq = float(np.sum(np.square(k))) if k is not None else 1.0
    if nv > 0 and ksq < 1:
        rng = np.random.default_rng(seed)
        sampled += rng.normal(0, math.sqrt(nv * (1 - ksq)), sampled.shape).astype(np.float32)
    nz = (len(sampled) - 1) * step + 1
    return blurred[:nz], sampled, interpolate_axis(sampled, np.arange(nz) / float(step), order=3, axis=0)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def interpolation_error(planes: np.ndarray, k, step: int, nv: float, rows, blurred_truth: bool) -> float:
    """Cubic's squared error from the tissue alone on lateral planes (y as z) sampled every ``step`` px, on the
    rows ``rows(n)`` selects, against the planes (or, ``blurred_truth``, the planes blurred by ``k``)."""
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))
    b, _, c = _pipeline(v, k, step, nv, 0)
    truth = b if blurred_truth else v[: len(c)]
    sel = rows(len(c))
    noise = np.random.default_rng(5).normal(0, math.sqrt(nv), v.shape).astype(np.float32) if nv > 0 \
        else np.zeros_like(v)
    bn, _, cn = _pipeline(noise, k, step, nv, 7)
    truth_n = bn if blurred_truth else noise[: len(cn)]
    return _mse(truth[sel], c[sel]) - _mse(truth_n[sel], cn[sel])


def cubic_noise_gain(pos: float) -> float:
    """The sum of squared cubic interpolation weights at ``pos`` (0..1) between two samples: the share of white
    input noise variance cubic passes on there."""
    from napari_emsr.interpolation import interpolate_axis

    n, out = 40, 0.0
    for i in range(n):
        d = np.zeros((n, 1, 1), np.float32)
        d[i] = 1
        out += float(interpolate_axis(d, np.array([n // 2 + pos]), order=3, axis=0)[0, 0, 0]) ** 2
    return out


def terms(path: str, device: str = "cpu") -> dict:
    """Every term of one saved model (see the module's docstring)."""
    import tifffile
    from bench_degradation import cut

    from napari_emsr.degrade import profile_kernel
    from napari_emsr.heldout import lateral_planes, model_profile, noise_variance, split_sections
    from napari_emsr.interpolation import interpolate_axis
    from napari_emsr.io import as_volume
    from napari_emsr.model import load_model
    from napari_emsr.reconstruct import reconstruct

    name = Path(path).name.removesuffix(".emsr.pt")
    vol, half, stack, fac, _ = name.split("_")
    f = int(fac[1:])
    gt = tifffile.imread(DATA / f"medulla_fibsem_iso10nm_{vol}_250.tif")
    h = gt.shape[0] // 2
    vol_gt = gt[:h] if half == "dev" else gt[h:]
    lr = cut(vol_gt, stack, f, 0)
    model = load_model(path)
    prof = model_profile(model.config)
    k = profile_kernel(prof, f)

    # against the ground truth: the central 128 x 128 columns, as bench_heldout.py scores
    zmax = (lr.shape[0] - 1) * f + 1
    ny, nx = lr.shape[1:]
    ys, xs = slice((ny - 128) // 2, (ny + 128) // 2), slice((nx - 128) // 2, (nx + 128) // 2)
    ref = vol_gt[:zmax, ys, xs].astype(np.float32)
    scored = as_volume(np.ascontiguousarray(lr[:, ys, xs]), spacing=(10.0 * f, 10.0, 10.0))
    cub = np.asarray(reconstruct(scored, "cubic", planes="fuse").compute()[:zmax], np.float32)
    rec = np.asarray(reconstruct(scored, model, planes="fuse", device=device).compute()[:zmax], np.float32)
    btw = np.arange(zmax) % f != 0

    # the stack alone: held-out sections at 2F, lateral planes at F and 2F
    kept, held = split_sections(lr)
    m = len(held)
    nvh = noise_variance(held)
    g1 = float(np.mean([cubic_noise_gain(j / f) for j in range(1, f)]))
    planes = lateral_planes(kept)
    nv = noise_variance(planes)
    between = lambda n: np.arange(n) % f != 0  # noqa: E731
    mid = lambda n: np.arange(n) % (2 * f) == f  # noqa: E731
    out = {"name": name, "factor": f, "stack": stack, "profile": prof, "nv": nv, "nvh": nvh, "g1": g1,
           "C_ax": _mse(ref[btw], cub[btw]), "R_ax": _mse(ref[btw], rec[btw]),
           "C_ax_all": _mse(ref, cub), "R_ax_all": _mse(ref, rec)}
    out["I_ax"] = out["C_ax"] - nvh * g1
    cubic_held = interpolate_axis(kept, np.arange(m) + 0.5, order=3, axis=0)
    out["I_S"] = _mse(held, cubic_held) - nvh - nvh * cubic_noise_gain(0.5)
    out["I_L"] = interpolation_error(planes, k, f, nv, between, False)
    out["I_JL"] = interpolation_error(planes, k, 2 * f, nv, mid, True)
    out["I_Lx"] = interpolation_error(planes.transpose(0, 2, 1), k, f, nv, between, False)
    out["I_JLx"] = interpolation_error(planes.transpose(0, 2, 1), k, 2 * f, nv, mid, True)

    # the model on the lateral planes at F, and its noise
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))
    blurred, sampled, cubic = _pipeline(v, k, f, nv, 0)
    nz = len(cubic)
    sel = between(nz)

    def run(s: np.ndarray) -> np.ndarray:
        return np.asarray(reconstruct(as_volume(s, spacing=(float(f), 1.0, 1.0)), model, planes="xz",
                                      deband=False, device=device).compute(), np.float32)[:nz]

    restored = run(sampled)
    out["C_L"] = _mse(v[:nz][sel], cubic[sel]) - nv
    out["R_L"] = _mse(v[:nz][sel], restored[sel]) - nv
    out["covR"] = out["covC"] = 0.0
    if nv > 0 and k is not None:
        from scipy import ndimage

        from napari_emsr.interpolation import interpolate_axis as interp

        d = np.random.default_rng(1).normal(0.0, math.sqrt(nv), v.shape).astype(np.float32)
        s2 = ndimage.convolve1d(v + d, k, axis=0, mode="mirror")[::f] + (sampled - blurred[::f])
        dd = d[:nz][sel].astype(np.float64)
        out["covR"] = float(np.mean((run(s2)[sel] - restored[sel]) * dd))
        out["covC"] = float(np.mean((interp(s2, np.arange(nz) / float(f), order=3, axis=0)[sel] - cubic[sel]) * dd))
    for q in (0.25, 0.5):
        d = np.random.default_rng(11).normal(0, math.sqrt(q * max(nv, 1e-9)), sampled.shape).astype(np.float32)
        out[f"Nr{int(q * 100)}"] = float(np.mean((run(sampled + d) - restored)[sel].astype(np.float64) ** 2)) / q
    return out


def _db(a: float, b: float) -> float:
    return 10.0 * math.log10(a / b)


def fit(lines: str, runs: str) -> None:
    """The correlations and fits of docs/benchmarks.md from ``terms`` lines and bench_heldout.py's run files (the
    development volume ts1 fits, the report volume ts2 checks)."""
    rows = {r["name"]: r for r in map(json.loads, Path(lines).read_text().splitlines())}
    true = {n: json.loads((Path(runs) / f"{n}.json").read_text()) for n in rows}
    ratio = {n: true[n]["true_db"] / true[n]["lateral_db"] for n in rows}
    a_f = {n: r["I_ax"] / r["I_L"] for n, r in rows.items()}
    a_2f = {n: r["I_S"] / r["I_JL"] for n, r in rows.items()}
    print("| model | true / lateral | I_ax / I_L | I_S / I_JL | lateral | corrected | 2 cov / R_L |")
    print("|---|---|---|---|---|---|---|")
    for n, r in sorted(rows.items()):
        corrected = _db(r["C_L"] + 2 * r["covC"], r["R_L"] + 2 * r["covR"])
        print(f"| {n} | {ratio[n]:.2f} | {a_f[n]:.2f} | {a_2f[n]:.2f} | {_db(r['C_L'], r['R_L']):+.2f} | "
              f"{corrected:+.2f} | {2 * r['covR'] / r['R_L']:.2f} |")
    groups = {"without added noise": [n for n in rows if "poisson" not in n],
              "noisy": [n for n in rows if "poisson" in n], "all": list(rows)}
    for label, names in groups.items():
        lf, l2 = np.log([a_f[n] for n in names]), np.log([a_2f[n] for n in names])
        rt = np.array([ratio[n] for n in names])
        print(f"{label} ({len(names)}): corr(log I_ax/I_L, true/lateral) {np.corrcoef(lf, rt)[0, 1]:+.2f}, "
              f"corr(log I_S/I_JL, log I_ax/I_L) {np.corrcoef(l2, lf)[0, 1]:+.2f}, "
              f"corr(log I_S/I_JL, true/lateral) {np.corrcoef(l2, rt)[0, 1]:+.2f}")
    dev = sorted(n for n in rows if n.startswith("ts1"))
    rep = sorted(n for n in rows if n.startswith("ts2"))

    def lateral(n: str, corrected: bool) -> float:
        r = rows[n]
        if corrected:
            return _db(r["C_L"] + 2 * r["covC"], r["R_L"] + 2 * r["covR"])
        return true[n]["lateral_db"]

    for corrected in (False, True):
        x = np.array([lateral(n, corrected) for n in dev])
        y = np.array([true[n]["true_db"] for n in dev])
        w = float(x @ y / (x @ x))
        err_dev = w * x - y
        err_rep = {n: w * lateral(n, corrected) - true[n]["true_db"] for n in rep}
        print(f"{w:.2f} x {'corrected ' if corrected else ''}lateral: development largest "
              f"{np.abs(err_dev).max():.2f} RMS {np.sqrt(np.mean(err_dev ** 2)):.2f}; report largest "
              f"{max(abs(e) for e in err_rep.values()):.2f}: "
              + ", ".join(f"{n.split('_', 2)[2]} {e:+.2f}" for n, e in err_rep.items()))

    def two_part(n: str, a: float, w: float) -> float:
        r = rows[n]
        tissue = max(r["R_L"] + 2 * r["covR"] - r["Nr25"], 0.02 * (r["R_L"] + 2 * r["covR"]))
        return _db(a * r["I_L"] + r["nv"] * r["g1"], a * r["I_L"] * (tissue / r["I_L"]) ** w + r["Nr25"])

    best = min((float(np.sqrt(np.mean([(two_part(n, a, w) - true[n]["true_db"]) ** 2 for n in dev]))), a, w)
                for a in np.arange(0.5, 6.01, 0.1) for w in np.arange(0.2, 1.01, 0.02))
    rms, a, w = best
    print(f"two-part model: a = {a:.1f}, w = {w:.2f}, development RMS {rms:.2f}")
    for group in (dev, rep):
        print("  " + ", ".join(f"{n.split('_', 2)[2]} {two_part(n, a, w) - true[n]['true_db']:+.2f}" for n in group))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, metavar="MODEL")
    ap.add_argument("--json", default=None, help="append one JSON line per model here (else print)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit", default=None, metavar="JSONL", help="print the analyses of these terms")
    ap.add_argument("--runs", default=str(Path(__file__).resolve().parent / "results" / "2026-12-07-estimate-terms"),
                    help="bench_heldout.py's run files of the same models (true and lateral gains)")
    a = ap.parse_args()
    if a.fit:
        fit(a.fit, a.runs)
        return
    import torch

    torch.set_num_threads(a.threads)
    for path in a.models or []:
        line = json.dumps(terms(path))
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(line + "\n")
        else:
            print(line, flush=True)


if __name__ == "__main__":
    main()
