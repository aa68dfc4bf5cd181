"""Inspecting a degradation: simulated sections next to the stack's real axial planes, and how close they are.

Self-supervised training is only as good as its picture of how z was cut. :func:`compare_sections` degrades lateral
planes of the stack by each candidate (point, slab, Gaussian, the fitted profile, the model's learned degradation)
exactly as training does, and compares them with real axial planes of the same stack: the power spectrum along the
low-resolution axis (the log-spectral distance of :mod:`napari_emsr.degrade`; lower is closer) and the noise level.
For the fixed and fitted profiles the distance allows for the projection thick sections already carry in the lateral
planes (``profile_fit._projection_gain``), as the profile fit does; the learned degradation learned that itself.
:func:`write_report` writes the planes (a TIFF and a PNG panel) and the figures (JSON). ``emsr info --degradation``
and the panel use them. Importing this module does not import torch (only the learned candidate does).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .degrade import profile_kernel, section_blur
from .errors import InputError
from .geometry import check_factor, to_front
from .interpolation import interpolate_axis
from .profile_fit import BLUR_ORDER, _SpectrumMatch, as_float32, fit_profile, noise_sigma

#: Planes of each kind shown and measured.
N_PLANES = 4


def _sample_rows(planes: np.ndarray, factor: float) -> np.ndarray:
    """Rows 0, F, 2F ... of (K, H, W) planes (linear between rows for a fractional position)."""
    n = planes.shape[1]
    pos = np.arange(int(math.floor((n - 1) / factor + 1e-9)) + 1) * factor
    return interpolate_axis(planes, pos, order=1, axis=1)


def simulate(planes: np.ndarray, factor: float, profile, *, noise: float = 0.0, learned: dict | None = None,
             seed: int = 0) -> np.ndarray:
    """Lateral planes (K, H, W) in the network's 0-1 range degraded along their rows (axis 1) like z:
    by ``profile`` (a name or a (thickness, softness) pair) with Gaussian ``noise``, or by a learned
    degradation's saved state (``learned``). Returns the LR planes (K, m, W), rows every F."""
    if learned is not None:
        import torch

        from .methods.isotropic.degradation import load_degradation

        run, _ = load_degradation(learned, planes.shape[1], factor)
        lr = run(torch.from_numpy(np.ascontiguousarray(planes))[:, None], torch.Generator().manual_seed(seed))
        return lr[:, 0].numpy()
    lr = _sample_rows(section_blur(planes, profile, factor, axis=1), factor)
    if noise > 0:
        lr = lr + np.random.default_rng(seed).normal(0.0, noise, lr.shape).astype(np.float32)
    return lr


def compare_sections(data, factor: float, *, axis: int = 0, model=None, width: int = 384,
                     planes: int = N_PLANES) -> dict[str, Any]:
    """Real axial planes of the stack next to lateral planes degraded by each candidate profile.

    Parameters
    ----------
    data : array (numpy or dask), 3D
        The anisotropic stack.
    factor : float
        F of the stack.
    model : EMSRModel, optional
        Adds the model's own degradation: its learned one (``--profile learned``), or the profile it was trained
        with.

    Returns
    -------
    dict
        ``"real"``: (K, m, W) real axial planes (rows: z), ``"simulated"``: name -> (K, m, W) planes,
        ``"stats"``: name -> {"distance", "noise", "mean", "std"} (``"real"`` too), ``"closest"``: the candidate
        with the lowest spectral distance, ``"fit"``: the fitted profile, all in the 0-1 range of the stack. The
        distances are taken against the lateral lines the fit matched z to (``fit["lateral_lines"]``).
    """
    factor = check_factor(factor)
    if getattr(data, "ndim", 0) != 3:
        raise InputError(f"the degradation is inspected on a 3D stack, got {getattr(data, 'ndim', '?')}D data")
    if factor <= 1.0:
        raise InputError("the stack is not anisotropic (F = 1): there is no axial degradation to inspect")
    if axis != 0:
        data = to_front(data, axis)
    nz, ny, nx = data.shape
    w = int(min(width, ny, nx))
    side = int(min(ny, nx, max(w, math.ceil(nz * factor))))
    m_needed = int(math.floor((side - 1) / factor + 1e-9)) + 1
    rows = int(min(nz, m_needed))
    if rows < 4:
        raise InputError(f"the stack has {nz} sections: at least 4 are needed to compare axial planes")
    ys = np.linspace(0, ny - 1, planes + 2)[1:-1].round().astype(int)
    zs = np.linspace(0, nz - 1, planes + 2)[1:-1].round().astype(int)
    x0 = (nx - w) // 2
    real = np.stack([as_float32(data[:rows, int(y), x0 : x0 + w]) for y in ys])
    y0 = (ny - side) // 2
    lateral = np.stack([as_float32(data[int(z), y0 : y0 + side, x0 : x0 + w]) for z in zs])
    if not (np.isfinite(real).all() and np.isfinite(lateral).all()):
        raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) first")
    match = _SpectrumMatch(data, factor)
    lo, scale = match.lo, match.scale
    real, lateral = (real - lo) / scale, (lateral - lo) / scale
    sigma = match.sigma

    fit = fit_profile(data, factor)  # exactly what --profile auto trains with (it reads its own, fewer planes)
    candidates: dict[str, Any] = {name: name for name in BLUR_ORDER}
    candidates["fitted"] = fit.profile
    learned = None
    if model is not None:
        if "degradation" in getattr(model, "stages", {}):
            learned = model.stages["degradation"]
            candidates["learned (model)"] = "learned"
        else:
            opts = model.config.get("options", {})
            prof = opts.get("profile", model.config.get("profile"))
            if prof == "fitted" and opts.get("thickness") is not None:
                candidates["model"] = (float(opts["thickness"]), float(opts["softness"]))
            elif prof in BLUR_ORDER:
                candidates["model"] = prof
    simulated: dict[str, np.ndarray] = {}
    table = {"real": _stats(real, None)}
    for name, prof in candidates.items():
        if prof == "learned":
            lr = simulate(lateral, factor, None, learned=learned)
            dist = match.distance_of(lr)
        else:
            k = profile_kernel(prof, factor)
            kept = 1.0 if k is None else float((k.astype(np.float64) ** 2).sum())
            # thick sections get back the detector noise their blur averaged away, as training adds it
            lr = simulate(lateral, factor, prof, noise=sigma * math.sqrt(max(0.0, 1.0 - kept)))
            # against the lateral lines the fit matched z to (both axes, or the one z resembles)
            dist = match.distances(prof)[fit.lateral_lines] if match.length else float("nan")
        simulated[name] = lr[:, :rows]
        table[name] = _stats(simulated[name], dist)
    ranked = [n for n in table if n != "real" and math.isfinite(table[n]["distance"])]
    closest = min(ranked, key=lambda n: table[n]["distance"]) if ranked else None
    return {"real": real, "simulated": simulated, "stats": table, "closest": closest, "fit": fit.as_dict(),
            "factor": factor, "rows": rows, "width": w}


def _stats(a: np.ndarray, distance: float | None) -> dict:
    return {"distance": None if distance is None else round(float(distance), 4),
            "noise": round(float(np.median([noise_sigma(x) for x in a])), 5),
            "mean": round(float(a.mean()), 4), "std": round(float(a.std()), 4)}


def _upsample(lr: np.ndarray, factor: float) -> np.ndarray:
    """LR planes (K, m, W) interpolated (cubic) onto the isotropic grid, for people to look at."""
    m = lr.shape[1]
    pos = np.arange(int(round((m - 1) * factor)) + 1) / factor
    return interpolate_axis(lr, pos, order=3, axis=1)


def write_report(result: dict[str, Any], out: str | Path) -> dict[str, str]:
    """Write ``out`` (.tif: real and simulated planes, interpolated onto the isotropic grid, as (kind, plane, z, x)
    with the kinds' names in the description), ``out`` with .png (a panel: one column per kind, labelled) and
    with .json (the figures). Returns the paths written."""
    import tifffile
    from PIL import Image, ImageDraw

    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"--degradation writes a TIFF: give a path ending in .tif, not {out.name!r}")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist: create it first")
    f = result["factor"]
    names = ["real", *result["simulated"]]
    stacks = [_upsample(result["real"], f)] + [_upsample(result["simulated"][n], f) for n in result["simulated"]]
    arr = np.stack(stacks).astype(np.float32)
    tifffile.imwrite(out, arr, description=json.dumps({"kinds": names, "axes": "kind, plane, z, x",
                                                       "factor": f}))
    # PNG: one column per kind (the first plane), labelled with its name and spectral distance
    img = np.clip(arr[:, 0], 0.0, 1.0)
    h, w = img.shape[1:]
    pad, head = 6, 30
    panel = np.full((h + head, len(names) * (w + pad) - pad), 255, np.uint8)
    for i in range(len(names)):
        panel[head:, i * (w + pad) : i * (w + pad) + w] = (img[i] * 255).round().astype(np.uint8)
    pil = Image.fromarray(panel)
    draw = ImageDraw.Draw(pil)
    for i, n in enumerate(names):
        d = result["stats"][n]["distance"]
        label = n if d is None else f"{n}  d={d:.3f}"
        draw.text((i * (w + pad) + 2, 2), label, fill=0)
        draw.text((i * (w + pad) + 2, 15), f"noise {result['stats'][n]['noise']:.3f}", fill=0)
    png = out.with_suffix(".png")
    pil.save(png)
    js = out.with_suffix(".json")
    js.write_text(json.dumps({"kinds": names, "stats": result["stats"], "closest": result["closest"],
                              "fit": result["fit"], "factor": f}, indent=2))
    return {"tiff": str(out), "png": str(png), "json": str(js)}
