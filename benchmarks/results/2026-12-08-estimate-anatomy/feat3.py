import sys, json, math
from pathlib import Path
import numpy as np
sys.path.insert(0, '/work/main/benchmarks')
import torch; torch.set_num_threads(1)
import tifffile
from scipy import ndimage
from bench_degradation import cut
from napari_emsr.heldout import split_sections, lateral_planes, noise_variance, model_profile
from napari_emsr.degrade import profile_kernel
from napari_emsr.io import as_volume
from napari_emsr.model import load_model
from napari_emsr.reconstruct import reconstruct

gts = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if len(sys.argv) > 2 and sys.argv[2] not in r['name']: continue
    vol, half, stack, F, steps = r['name'].split('_'); f = int(F[1:])
    gtp = f'/work/shared/data/medulla_fibsem_iso10nm_{vol}_250.tif'
    if gtp not in gts: gts[gtp] = tifffile.imread(gtp)
    gt = gts[gtp]; h = gt.shape[0] // 2
    vol_gt = gt[:h] if half == 'dev' else gt[h:]
    lr = cut(vol_gt, stack, f, 0)
    kept, held = split_sections(lr)
    planes = lateral_planes(kept); nv = noise_variance(planes)
    model = load_model('/work/scratch/s19/models/' + r['name'] + '.emsr.pt')
    prof = model_profile(model.config)
    k = profile_kernel(prof, f)
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))
    blurred = ndimage.convolve1d(v, k, axis=0, mode="mirror") if k is not None else v
    sampled = blurred[::f]
    ksq = float(np.sum(np.square(k))) if k is not None else 1.0
    if nv > 0 and ksq < 1:
        sampled = sampled + np.random.default_rng(0).normal(0.0, math.sqrt(nv * (1 - ksq)), sampled.shape).astype(np.float32)
    nz = (len(sampled) - 1) * f + 1
    between = np.arange(nz) % f != 0
    run = lambda s: np.asarray(reconstruct(as_volume(s, spacing=(float(f), 1.0, 1.0)), model, planes="xz", deband=False, device="cpu").compute(), np.float32)[:nz]
    base = run(sampled)
    out = {}
    for q in (0.25, 0.5):
        d = np.random.default_rng(11).normal(0, math.sqrt(q * max(nv, 1e-9)), sampled.shape).astype(np.float32)
        out[q] = float(np.mean((run(sampled + d) - base)[between].astype(np.float64) ** 2)) / q
    r.update(Nr25=out[0.25], Nr50=out[0.5])
    print(json.dumps(r), flush=True)
