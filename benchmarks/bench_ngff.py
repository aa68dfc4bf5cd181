"""OME-Zarr NGFF 0.4 (zarr v2, a file per chunk) against NGFF 0.5 (zarr v3, sharded): files and write time.

    python benchmarks/bench_ngff.py                       # 64 x 512 x 512 uint8 input, F = 4, model cubic
    python benchmarks/bench_ngff.py --shape 32,256,256 --repeats 1

The bundled anisotropic sample (40 x 10 x 10 nm, F = 4), mirrored to ``--shape`` (z, y, x), is reconstructed by
cubic interpolation (no training: the write path alone, as ``emsr reconstruct --method cubic`` runs it) and exported
by :func:`napari_emsr.reconstruct.export` as NGFF 0.4 and as 0.5, pyramid included, alternately ``--repeats`` times.
Then the same isotropic volume, computed once into memory, is written by :func:`napari_emsr.io.write_volume` with
``--chunks`` (a small-chunk layout, the kind that makes millions of files of a terabyte) in both versions. Printed
for each: files in the store, bytes on disk, the median write time (s) and its spread. Last, computed rather than
measured: the level-0 files of a 10000^3 uint8 volume (1 TB) at the ``--chunks`` layout (chunks for 0.4, shards of
:func:`napari_emsr.io.omezarr.shard_shape` for 0.5, blocks along z). One warm-up write of each version runs first
and is not counted. The device is the CPU (dask's threads, ``--threads``); compare the two versions within one run
only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

SPACING = (40.0, 10.0, 10.0)  # F = 4


def _store_stats(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _row(name: str, files: int, size: int, seconds: list[float]) -> str:
    med = statistics.median(seconds)
    spread = f"{min(seconds):.2f}-{max(seconds):.2f}" if len(seconds) > 1 else "-"
    return f"{name:<32} {files:>7} {size / 2**20:>9.1f} {med:>8.2f} {spread:>11}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64,512,512", help="input shape z,y,x (default 64,512,512)")
    ap.add_argument("--chunks", default="32,64,64", help="chunks z,y,x of the small-chunk layout (default 32,64,64)")
    ap.add_argument("--repeats", type=int, default=3, help="writes per version and layout (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="dask threads (default 2)")
    ap.add_argument("--keep", default=None, help="write the stores into this folder and keep them")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    chunks = tuple(int(v) for v in args.chunks.split(","))

    import dask
    from _synthetic import tiled_sample

    from napari_emsr.io import as_volume, write_volume
    from napari_emsr.io.omezarr import SHARD_BYTES, ngff_version, shard_shape
    from napari_emsr.reconstruct import export

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_ngff_"))
    folder.mkdir(parents=True, exist_ok=True)
    stack = np.asarray(tiled_sample(shape, (16, shape[1], shape[2])).compute())
    vol = as_volume(stack, spacing=SPACING)
    print(f"# bench_ngff: input {shape} uint8, {SPACING} nm (F = 4), model cubic; CPU "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} dask threads); "
          f"shards up to {SHARD_BYTES / 2**20:.0f} MiB")
    results: dict[tuple[str, str], tuple[int, int, list[float]]] = {}
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        for version in ("0.4", "0.5"):  # warm-up: imports, first compilations
            with ngff_version(version):
                export(vol, "cubic", folder / "warmup.ome.zarr", overwrite=True)
        shutil.rmtree(folder / "warmup.ome.zarr", ignore_errors=True)
        for _rep in range(args.repeats):
            for version in ("0.4", "0.5"):
                out = folder / f"reconstruct{version.replace('.', '')}.ome.zarr"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                with ngff_version(version):
                    export(vol, "cubic", out, overwrite=True)
                dt = time.perf_counter() - t0
                files, size = _store_stats(out)
                prev = results.get(("export", version), (0, 0, []))[2]
                results[("export", version)] = (files, size, prev + [dt])
        from napari_emsr.io import open_volume

        iso = np.asarray(open_volume(folder / "reconstruct04.ome.zarr").data.compute())
        for _rep in range(args.repeats):
            for version in ("0.4", "0.5"):
                out = folder / f"chunks{version.replace('.', '')}.ome.zarr"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                write_volume(out, iso, spacing=(10.0, 10.0, 10.0), chunks=chunks, ngff=version, overwrite=True)
                dt = time.perf_counter() - t0
                files, size = _store_stats(out)
                prev = results.get(("chunks", version), (0, 0, []))[2]
                results[("chunks", version)] = (files, size, prev + [dt])
    print(f"# output {iso.shape} uint8 ({iso.nbytes / 2**20:.0f} MiB at level 0, pyramid included in the stores); "
          f"{args.repeats} write(s) each")
    print(f"{'layout':<32} {'files':>7} {'disk MiB':>9} {'median s':>8} {'min-max s':>11}")
    for (what, version), (files, size, secs) in results.items():
        label = "export, default chunks" if what == "export" else "chunks " + "x".join(map(str, chunks))
        print(_row(f"{label} NGFF {version}", files, size, secs))
    for what in ("export", "chunks"):
        f4, _, s4 = results[(what, "0.4")]
        f5, _, s5 = results[(what, "0.5")]
        print(f"# {what}: 0.5 / 0.4 files {f5 / f4:.3f}, time {statistics.median(s5) / statistics.median(s4):.2f}")
    big = (10_000, 10_000, 10_000)
    shard = shard_shape(big, chunks, 0, 1)
    n4 = int(np.prod([-(-b // c) for b, c in zip(big, chunks)]))
    n5 = int(np.prod([-(-b // s) for b, s in zip(big, shard)]))
    print(f"# computed, 1 TB (10000^3 uint8) level 0 at chunks {chunks}: NGFF 0.4 {n4} files, NGFF 0.5 {n5} files "
          f"(shards {shard}, {np.prod(shard) / 2**20:.0f} MiB)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
