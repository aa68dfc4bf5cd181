"""Cluster exports: output voxels/s, peak memory per worker and the scaling ratio from 1 to 2 (or N) worker
processes, for cubic interpolation and a network, on a synthetic zarr volume at F = 4.

    python benchmarks/bench_cluster.py                          # 2 GB in, 8 GB out, cubic and rescnn/small
    python benchmarks/bench_cluster.py --gb 0.05 --net-gb 0.001 --slices 32 --chunks 64   # minutes on 2 cores

The input is the bundled anisotropic sample (33 x 192 x 192 at F = 4), mirrored and repeated into a
``--gb`` GB uint8 OME-Zarr (``--slices`` z slices, square lateral planes, voxel size 40/10/10 nm). Each
case starts a ``local:N`` cluster (``napari_emsr.cluster.open_client``, as ``emsr apply --scheduler local:N``
does), then times ``napari_emsr.reconstruct.export`` to a new OME-Zarr (pyramid included) from the moment the
cluster is up to the last level written. The network is built from the default method's network and size
(``--net``/``--size`` to change) and trained for 2 steps (speed does not depend on the weights); it restores
``--planes`` (default: fuse, as ``emsr apply``). ``--net-gb`` applies it to a smaller crop of the same volume
(a square lateral crop), since a network on a CPU is 10-100 x slower than cubic.

``--net-blocks N`` measures the network on the whole volume without restoring all of it: N output chunks (the
export's own, or ``--chunks``), spread evenly over the volume, are computed on the cluster (left on the workers,
not written), and the time for the whole volume is extrapolated from their voxels/s. Such rows say
"extrapolated" and give the chunks measured; they exclude the zarr write and the pyramid (a few % of a
network's time). Use a multiple of the worker count so that every worker is busy.

Peak memory per worker is the resident-set high-water mark of each worker process (``VmHWM``), read at
the end of its case (the workers are new processes for every case). The scaling ratio is the voxels/s with
the most workers over that with the fewest. Each worker runs one chunk at a time with its share of the cores
for torch (``napari_emsr.cluster.local_workers``): on a machine with one GPU or few cores, more workers
share the same hardware and the ratio says what the split costs or gains, not what more nodes would give.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np


def _peak_rss() -> int:
    """This process's resident-set high-water mark in bytes.

    Linux: ``VmHWM`` of /proc/self/status. Not ``getrusage``'s ``ru_maxrss``, which survives ``exec``: a worker
    process started by a nanny would report the nanny's size at the fork (every worker the same figure).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if platform.system() == "Darwin" else r * 1024)


def synthetic(path: Path, gb: float, slices: int):
    """Write a ``gb`` GB uint8 OME-Zarr made of the bundled sample, mirrored and repeated; return it opened."""

    from _synthetic import tiled_sample

    from napari_emsr.io import open_volume, write_volume

    nz = max(2, min(slices, int(gb * 1e9 // (64 * 64)) or 2))
    side = max(64, int(math.sqrt(gb * 1e9 / nz)))
    chunks = (nz, 256, 256)
    if path.exists():  # written by an earlier run with the same --dir: reused when it is the same volume
        try:
            vol = open_volume(path)
        except Exception:
            vol = None
        if vol is not None and tuple(vol.shape) == (nz, side, side):
            return vol
    arr = tiled_sample((nz, side, side), chunks)
    write_volume(path, arr, spacing=(40.0, 10.0, 10.0), pyramid=False, chunks=chunks, overwrite=True)
    return open_volume(path)


def network(vol, net: str, size: str | None, keep: Path | None = None):
    """The network to export with (2 training steps); with ``keep``, saved there and loaded from there by a later
    run, so that a resumed export (same model) can finish what an interrupted one began."""
    from napari_emsr.io import as_volume
    from napari_emsr.model import EMSRModel
    from napari_emsr.train import TrainConfig, train

    if keep is not None and keep.exists():
        return EMSRModel.load(keep)
    crop = as_volume(np.asarray(vol.data[:, :192, :192]), spacing=vol.spacing)
    cfg = TrainConfig(net=net, size=size, steps=2, patch=32, batch=2, device="cpu", val_every=10**9,
                      preview_every=0, seed=0)
    model = train(crop, cfg)
    if keep is not None:
        model.save(keep)
    return model


def _timing(out: Path) -> Path:
    return out.with_name(out.name + ".timing.json")


def _spent(out: Path) -> dict:
    """Seconds earlier runs spent exporting to ``out`` (interrupted, then resumed: see --dir)."""
    try:
        return json.loads(_timing(out).read_text())
    except (OSError, ValueError):
        return {"seconds": 0.0, "runs": 0}


def run_case(vol, model, out: Path, workers: int, planes: str, chunks: tuple[int, int] | None = None) -> dict:
    from napari_emsr.cluster import open_client
    from napari_emsr.reconstruct import export

    t0 = time.perf_counter()
    before = _spent(out)
    with open_client(f"local:{workers}") as client:
        client.wait_for_workers(workers, timeout=120)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            export(vol, model, out, planes=planes, device="cpu", chunks=chunks)
        except KeyboardInterrupt:  # kept for a later run with the same --dir, which resumes the export
            spent = {"seconds": before["seconds"] + time.perf_counter() - t1, "runs": before["runs"] + 1}
            _timing(out).write_text(json.dumps(spent))
            print(f"  interrupted after {spent['seconds']:.0f} s in {spent['runs']} run(s); run the same command "
                  "again to resume", flush=True)
            raise
        dt = time.perf_counter() - t1 + before["seconds"]
        peaks = sorted(client.run(_peak_rss).values())
    _timing(out).unlink(missing_ok=True)
    from napari_emsr.io import open_volume

    shape = open_volume(out).shape
    voxels = int(np.prod(shape, dtype=np.int64))
    return {"workers": workers, "output_shape": list(shape), "output_voxels": voxels, "seconds": dt,
            "voxels_per_s": voxels / dt, "cluster_start_s": started, "runs": before["runs"] + 1,
            "peak_rss_per_worker_mib": [p / 2**20 for p in peaks]}


def run_subset(vol, model, workers: int, planes: str, n_chunks: int, chunks: tuple[int, int] | None) -> dict:
    """``n_chunks`` output chunks of ``vol`` restored on a ``local:workers`` cluster, timed; the whole volume's time
    extrapolated from their voxels/s."""
    import distributed

    from napari_emsr.cluster import open_client
    from napari_emsr.reconstruct import export_chunks, reconstruct

    t0 = time.perf_counter()
    with open_client(f"local:{workers}") as client:
        client.wait_for_workers(workers, timeout=600)
        started = time.perf_counter() - t0
        arr = reconstruct(vol, model, planes=planes, device="cpu", chunks=chunks or export_chunks(vol, planes))
        total = math.prod(arr.numblocks)
        flat = sorted({int(i) for i in np.linspace(0, total - 1, min(n_chunks, total))})
        blocks = [arr.blocks[np.unravel_index(i, arr.numblocks)] for i in flat]
        voxels = sum(int(np.prod(b.shape, dtype=np.int64)) for b in blocks)
        t1 = time.perf_counter()
        futures = client.compute(blocks)
        distributed.wait(futures)
        dt = time.perf_counter() - t1
        errors = [f.exception() for f in futures if f.status != "finished"]
        if errors:
            raise RuntimeError(f"a measured chunk failed: {errors[0]!r}")
        del futures
        peaks = sorted(client.run(_peak_rss).values())
    out_voxels = int(np.prod(arr.shape, dtype=np.int64))
    rate = voxels / dt
    return {"workers": workers, "output_shape": list(arr.shape), "output_voxels": out_voxels,
            "voxels_per_s": rate, "seconds": out_voxels / rate, "extrapolated": True,
            "measured_chunks": len(blocks), "total_chunks": total, "measured_voxels": voxels,
            "measured_seconds": dt, "chunk_shape": list(blocks[0].shape), "cluster_start_s": started,
            "peak_rss_per_worker_mib": [p / 2**20 for p in peaks]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="input size in GB (uint8; output is about 4x)")
    ap.add_argument("--net-gb", type=float, default=None, help="input GB for the network cases (default: --gb)")
    ap.add_argument("--slices", type=int, default=128, help="z slices of the input")
    ap.add_argument("--workers", default="1,2", help="worker processes of each case, comma-separated")
    ap.add_argument("--methods", default="cubic,net", help="cubic and/or net")
    ap.add_argument("--net", default=None, help="network (default: the default method's)")
    ap.add_argument("--size", default=None, help="network size (default: the default method's)")
    ap.add_argument("--planes", default="fuse", choices=("xz", "yz", "fuse"))
    ap.add_argument("--chunks", type=int, default=None,
                    help="output chunk side (y and x, px) of the network cases (default: export's own); a small "
                    "volume is one export chunk, which one worker computes")
    ap.add_argument("--net-blocks", type=int, default=0,
                    help="network cases: restore only this many output chunks spread over the volume and extrapolate "
                    "(0: the whole export)")
    ap.add_argument("--dir", default=None,
                    help="working folder (default: a temporary one, removed at the end); with it, an interrupted "
                    "run (Ctrl-C, SIGTERM) keeps its output, model and seconds spent, and the same command resumes "
                    "the export and reports the time of all runs together")
    a = ap.parse_args()
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill is an interruption that keeps the timing

    import torch

    from napari_emsr.io import as_volume
    from napari_emsr.methods import get_method

    meth = get_method("isotropic")
    net, size = a.net or meth.net, a.size or meth.size
    workers = [int(w) for w in a.workers.split(",")]
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="emsr-bench-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        vol = synthetic(work / "input.ome.zarr", a.gb, a.slices)
        print(f"input {vol.shape} uint8 ({vol.data.nbytes / 1e9:.3g} GB) at F = 4, written in "
              f"{time.perf_counter() - t:.1f} s; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
              f"{date.today()}", flush=True)
        rows = []
        for what in a.methods.split(","):
            if what == "cubic":
                model, v = "cubic", vol
            else:
                model = network(vol, net, size, work / f"{net}-{size}.emsr.pt" if a.dir else None)
                gb = a.gb if a.net_gb is None else a.net_gb
                side = max(16, min(vol.shape[1], int(math.sqrt(gb * 1e9 / vol.shape[0]))))
                v = vol if side == vol.shape[1] else as_volume(vol.data[:, :side, :side], spacing=vol.spacing)
            label = "cubic" if what == "cubic" else f"{net}/{size} {a.planes}"
            for n in workers:
                out = work / f"out-{what}-{n}.ome.zarr"
                chunks = (a.chunks, a.chunks) if a.chunks and what != "cubic" else None
                if what != "cubic" and a.net_blocks:
                    r = run_subset(v, model, n, a.planes, a.net_blocks, chunks)
                else:
                    r = run_case(v, model, out, n, a.planes, chunks)
                shutil.rmtree(out, ignore_errors=True)
                r["what"] = label
                r["chunks"] = list(chunks) if chunks else "export's"
                r["input_shape"] = list(v.shape)
                rows.append(r)
                how = (f"EXTRAPOLATED from {r['measured_chunks']} of {r['total_chunks']} chunks "
                       f"{tuple(r['chunk_shape'])} restored in {r['measured_seconds']:.1f} s: whole volume "
                       f"{r['seconds']:.0f} s, write excluded" if r.get("extrapolated")
                       else f"{r['seconds']:.1f} s" + (f" over {r['runs']} runs (resumed)" if r["runs"] > 1 else ""))
                print(f"  {label:<22} local:{n}  in {tuple(v.shape)} -> out {tuple(r['output_shape'])}: "
                      f"{r['voxels_per_s'] / 1e6:8.3f} Mvoxel/s ({how}; cluster start "
                      f"{r['cluster_start_s']:.1f} s); peak RSS per worker "
                      f"{', '.join(f'{m:.0f}' for m in r['peak_rss_per_worker_mib'])} MiB", flush=True)
            mine = [r for r in rows if r["what"] == label]
            if len(mine) > 1:
                ratio = mine[-1]["voxels_per_s"] / mine[0]["voxels_per_s"]
                print(f"  {label:<22} scaling local:{mine[0]['workers']} -> local:{mine[-1]['workers']}: "
                      f"x{ratio:.2f}", flush=True)
        print(json.dumps({"date": str(date.today()), "cores": os.cpu_count(), "results": rows}))
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
