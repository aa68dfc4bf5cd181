"""The cluster and throughput benchmarks run to the end at a tiny size and print what they promise (slow: they
start clusters and train networks; EMSR_SLOW=1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> tuple[str, dict]:
    res = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_cluster(tmp_path):
    pytest.importorskip("distributed")
    out, res = _run("bench_cluster.py", "--gb", "0.002", "--net-gb", "0.0002", "--slices", "16", "--size", "tiny",
                    "--dir", str(tmp_path))
    rows = res["results"]
    assert [(r["what"].split()[0], r["workers"]) for r in rows] == [("cubic", 1), ("cubic", 2), ("rescnn/tiny", 1),
                                                                  ("rescnn/tiny", 2)]
    assert all(r["voxels_per_s"] > 0 and len(r["peak_rss_per_worker_mib"]) == r["workers"] for r in rows)
    assert all(50 < m < 8000 for r in rows for m in r["peak_rss_per_worker_mib"])
    assert out.count("scaling local:1 -> local:2") == 2


@pytest.mark.slow
def test_bench_throughput(tmp_path):
    out, res = _run("bench_throughput.py", "--shape", "12,48,48", "--size", "tiny", "--device", "cpu",
                    "--dir", str(tmp_path))
    assert res["output_voxels"] == 38 * 48 * 48 and res["voxels_per_s"] > 0
    assert res["flops_per_pixel"] > 0 and res["effective_flops_per_voxel"] >= 2 * res["flops_per_pixel"] * 0.99
    assert res["peak_flops"] > 0 and 0 < res["network_alone_flops"] < res["peak_flops"]
    assert {"read", "interpolation", "copies_and_tiling", "network", "write_all_levels"} <= set(res["breakdown_s"])
    assert res["breakdown_s"]["network"] > 0 and "fraction of peak" in out


@pytest.mark.slow
def test_bench_cluster_extrapolates_the_network_from_some_chunks(tmp_path):
    pytest.importorskip("distributed")
    out, res = _run("bench_cluster.py", "--gb", "0.002", "--slices", "16", "--size", "tiny", "--methods", "net",
                    "--net-blocks", "2", "--chunks", "32", "--dir", str(tmp_path))
    rows = res["results"]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["extrapolated"] for r in rows)
    assert all(r["measured_chunks"] == 2 < r["total_chunks"] for r in rows)
    assert all(r["measured_voxels"] < r["output_voxels"] and r["voxels_per_s"] > 0 for r in rows)
    assert all(abs(r["seconds"] - r["output_voxels"] / r["voxels_per_s"]) < 1e-6 * r["seconds"] for r in rows)
    assert out.count("EXTRAPOLATED from 2 of") == 2
