import sys, json, math
from pathlib import Path
import numpy as np
sys.path.insert(0, '/work/main/benchmarks')
import tifffile
from scipy import ndimage
from bench_degradation import cut
from napari_emsr.heldout import split_sections, lateral_planes, noise_variance, _mse
from napari_emsr.degrade import profile_kernel
from napari_emsr.interpolation import interpolate_axis

def pipeline(v, k, step, nv, seed, fresh=True):
    blurred = ndimage.convolve1d(v, k, axis=0, mode="mirror") if k is not None else v
    sampled = blurred[::step].copy()
    ksq = float(np.sum(np.square(k))) if k is not None else 1.0
    if fresh and nv > 0 and ksq < 1:
        sampled += np.random.default_rng(seed).normal(0, math.sqrt(nv * (1 - ksq)), sampled.shape).astype(np.float32)
    nz = (len(sampled) - 1) * step + 1
    cubic = interpolate_axis(sampled, np.arange(nz) / float(step), order=3, axis=0)
    return blurred[:nz], cubic, v[:nz]

def interp_err(planes, k, step, nv, rows, truth_blurred):
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))
    b, c, t = pipeline(v, k, step, nv, 0)
    T = b if truth_blurred else t
    sel = rows(len(c))
    m = _mse(T[sel], c[sel])
    # the same pipeline on pure noise of the planes' variance: what the noise alone contributes
    d = np.random.default_rng(5).normal(0, math.sqrt(nv), v.shape).astype(np.float32) if nv > 0 else np.zeros_like(v)
    bd, cd, td = pipeline(d, k, step, nv, 7)
    Td = bd if truth_blurred else td
    return m - _mse(Td[sel], cd[sel])

def cw2(pos):
    n = 40; e = []
    for i in range(n):
        dd = np.zeros((n, 1, 1), np.float32); dd[i] = 1
        e.append(float(interpolate_axis(dd, np.array([20 + pos]), order=3, axis=0)[0, 0, 0]))
    return sum(x * x for x in e)

gts = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    vol, half, stack, F, steps = r['name'].split('_'); f = int(F[1:])
    gtp = f'/work/shared/data/medulla_fibsem_iso10nm_{vol}_250.tif'
    if gtp not in gts: gts[gtp] = tifffile.imread(gtp)
    gt = gts[gtp]; h = gt.shape[0] // 2
    vol_gt = gt[:h] if half == 'dev' else gt[h:]
    lr = cut(vol_gt, stack, f, 0)
    kept, held = split_sections(lr)
    m = len(held)
    nvh = noise_variance(held)
    cpred = interpolate_axis(kept, np.arange(m) + 0.5, order=3, axis=0)
    I_S = _mse(held, cpred) - nvh - nvh * cw2(0.5)
    planes = lateral_planes(kept); nv = noise_variance(planes)
    prof = r['profile'] if not isinstance(r['profile'], list) else tuple(r['profile'])
    k = profile_kernel(prof, f)
    between = lambda n: np.arange(n) % f != 0
    mid = lambda n: np.arange(n) % (2 * f) == f
    I_L = interp_err(planes, k, f, nv, between, False)
    I_JL = interp_err(planes, k, 2 * f, nv, mid, True)
    I_L2 = interp_err(planes, None, f, nv, between, False)   # point sampling, unblurred, at F
    I_JL2 = interp_err(planes, None, 2 * f, nv, mid, False)  # point sampling at 2F, mid rows
    # the same along x instead of y
    px = planes.transpose(0, 2, 1)
    I_Lx = interp_err(px, k, f, nv, between, False)
    I_JLx = interp_err(px, k, 2 * f, nv, mid, True)
    I_ax = r['C_ax'] - nvh * r['g1']
    r.update(I_S=I_S, I_L=I_L, I_JL=I_JL, I_L2=I_L2, I_JL2=I_JL2, I_Lx=I_Lx, I_JLx=I_JLx, I_ax=I_ax)
    print(json.dumps(r), flush=True)
