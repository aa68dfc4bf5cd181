import sys, json, math, glob
from pathlib import Path
import numpy as np
sys.path.insert(0, '/work/main/benchmarks')
import torch
torch.set_num_threads(1)
import tifffile
from scipy import ndimage
from bench_degradation import cut
from napari_emsr.heldout import (split_sections, lateral_planes, noise_variance, model_profile, _mse)
from napari_emsr.degrade import profile_kernel
from napari_emsr.interpolation import interpolate_axis
from napari_emsr.io import as_volume
from napari_emsr.model import load_model
from napari_emsr.reconstruct import reconstruct

def cubic_weights_sq(step):
    # mean over between rows of sum of squared cubic weights (noise passed by cubic at spacing step)
    n = 40
    out = []
    for j in range(1, step):
        e = []
        pos = np.array([20 + j / step])
        for i in range(n):
            d = np.zeros((n, 1, 1), np.float32); d[i] = 1
            e.append(float(interpolate_axis(d, pos, order=3, axis=0)[0, 0, 0]))
        out.append(sum(x * x for x in e))
    return float(np.mean(out)) if out else 1.0

def lateral_mse(model, planes, step, factor, profile, nv, score_blurred=False):
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))
    k = profile_kernel(profile, factor)
    blurred = ndimage.convolve1d(v, k, axis=0, mode="mirror") if k is not None else v
    sampled = blurred[::step]
    ksq = float(np.sum(np.square(k))) if k is not None else 1.0
    averaged = 1.0 - ksq
    if nv > 0 and averaged > 0:
        rng = np.random.default_rng(0)
        sampled = sampled + rng.normal(0.0, math.sqrt(nv * averaged), sampled.shape).astype(np.float32)
    nz = (len(sampled) - 1) * step + 1
    cubic = interpolate_axis(sampled, np.arange(nz) / float(step), order=3, axis=0)
    between = np.arange(nz) % step != 0
    out = {}
    if score_blurred:
        # cubic only, against blurred rows between (their noise nv*ksq)
        out['C'] = _mse(blurred[:nz][between], cubic[between]) - nv * ksq
        return out
    vol = as_volume(sampled, spacing=(float(step), 1.0, 1.0))
    restored = np.asarray(reconstruct(vol, model, planes="xz", deband=False, device="cpu").compute(), np.float32)[:nz]
    out['C'] = _mse(v[:nz][between], cubic[between]) - nv
    out['R'] = _mse(v[:nz][between], restored[between]) - nv
    if nv > 0 and k is not None:
        rng2 = np.random.default_rng(1)
        d = rng2.normal(0.0, math.sqrt(nv), v.shape).astype(np.float32)
        s2 = ndimage.convolve1d(v + d, k, axis=0, mode="mirror")[::step] + (sampled - blurred[::step])
        r2 = np.asarray(reconstruct(as_volume(s2, spacing=(float(step), 1.0, 1.0)), model, planes="xz", deband=False,
                                    device="cpu").compute(), np.float32)[:nz]
        c2 = interpolate_axis(s2, np.arange(nz) / float(step), order=3, axis=0)
        dd = d[:nz][between].astype(np.float64)
        out['covR'] = float(np.mean((r2[between] - restored[between]) * dd))
        out['covC'] = float(np.mean((c2[between] - cubic[between]) * dd))
    else:
        out['covR'] = out['covC'] = 0.0
    return out

gts = {}
rows = []
for mp in sys.argv[1:]:
    name = Path(mp).name.replace('.emsr.pt', '')
    vol, half, stack, F, steps = name.split('_')
    f = int(F[1:])
    gtp = f'/work/shared/data/medulla_fibsem_iso10nm_{vol}_250.tif'
    if gtp not in gts: gts[gtp] = tifffile.imread(gtp)
    gt = gts[gtp]; h = gt.shape[0] // 2
    vol_gt = gt[:h] if half == 'dev' else gt[h:]
    lr = cut(vol_gt, stack, f, 0)
    zmax = (lr.shape[0] - 1) * f + 1
    ny, nx = lr.shape[1:]; c = 128
    ys, xs = slice((ny - c) // 2, (ny + c) // 2), slice((nx - c) // 2, (nx + c) // 2)
    ref = vol_gt[:zmax, ys, xs].astype(np.float32)
    scored = as_volume(np.ascontiguousarray(lr[:, ys, xs]), spacing=(10.0 * f, 10.0, 10.0))
    model = load_model(mp)
    cub = np.asarray(reconstruct(scored, 'cubic', planes='fuse').compute()[:zmax], np.float32)
    rec = np.asarray(reconstruct(scored, model, planes='fuse', device='cpu').compute()[:zmax], np.float32)
    # between rows only, and all rows
    zz = np.arange(zmax); btw = zz % f != 0
    C_ax, R_ax = _mse(ref[btw], cub[btw]), _mse(ref[btw], rec[btw])
    C_ax_all, R_ax_all = _mse(ref, cub), _mse(ref, rec)
    kept, held = split_sections(lr)
    m = len(held)
    nvh = noise_variance(held)
    cpred = interpolate_axis(kept, np.arange(m) + 0.5, order=3, axis=0)
    C_S = _mse(held, cpred) - nvh
    planes = lateral_planes(kept); nv = noise_variance(planes)
    prof = model_profile(model.config)
    L = lateral_mse(model, planes, f, f, prof, nv)
    JLc = lateral_mse(None, planes, 2 * f, f, prof, nv, score_blurred=True)
    g1, g2 = cubic_weights_sq(f), cubic_weights_sq(2 * f)
    row = dict(name=name, f=f, stack=stack, nv=nv, nvh=nvh, g1=g1, g2=g2, C_ax=C_ax, R_ax=R_ax, C_ax_all=C_ax_all,
               R_ax_all=R_ax_all, C_S=C_S, C_L=L['C'], R_L=L['R'], covR=L['covR'], covC=L['covC'], C_JLc=JLc['C'], profile=prof)
    print(json.dumps(row), flush=True)
    rows.append(row)
