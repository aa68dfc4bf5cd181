"""Exports on a dask.distributed cluster of worker processes: TIFF and zarr outputs equal the single-process ones,
the model reaches each worker once, a killed worker is survived and a resumed export skips finished blocks."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_emsr.cli import main  # noqa: E402
from napari_emsr.errors import InputError  # noqa: E402
from napari_emsr.io import as_volume, open_volume, write_volume  # noqa: E402
from napari_emsr.reconstruct import export  # noqa: E402

TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "24", "--batch", "4", "--device", "cpu", "-q"]
CHUNKS = (32, 96)  # output chunks (y, x): 16 per volume, 8 per zarr block of 256 rows


# --------------------------------------------------------------------------- run in the worker processes
def _install_counters():
    """Count, in this worker process, engine deserialisations and chunks computed."""
    import napari_emsr.reconstruct as r

    if getattr(r, "_test_counts", None) is None:
        r._test_counts = {"loads": 0, "blocks": 0}
        setstate, block = r._Engine.__setstate__, r._Engine.block

        def counted_setstate(self, d):
            r._test_counts["loads"] += 1
            setstate(self, d)

        def counted_block(self, *a):
            r._test_counts["blocks"] += 1
            return block(self, *a)

        r._Engine.__setstate__, r._Engine.block = counted_setstate, counted_block
    r._test_counts.update(loads=0, blocks=0)


def _counts():
    import napari_emsr.reconstruct as r

    return dict(r._test_counts)


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A (9, 512, 96) uint8 zarr stack (F = 4) and a tiny model trained on it for 2 steps."""
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth

    d = tmp_path_factory.mktemp("cluster")
    gt = _ground_truth()[:33, :64, :96]
    a = make_anisotropic(np.tile(gt, (1, 8, 1)), 4, "slab")
    stack = d / "stack.ome.zarr"
    write_volume(stack, as_volume(a, spacing=(40.0, 10.0, 10.0)), pyramid=False)
    model = d / "m.emsr.pt"
    assert main(["train", str(stack), "-o", str(model), "--steps", "2", *TINY]) == 0
    return stack, model


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr("napari_emsr.reconstruct._export_chunks", lambda vol, planes: CHUNKS)


def _read(p):
    return np.asarray(open_volume(p).data.compute(scheduler="synchronous"))


# ------------------------------------------------------------------------------------------------ tests
def test_tiff_under_worker_processes(cluster, data, tmp_path):
    """The memory-mapped TIFF used to be pickled to the workers, which filled their copies: an all-zero file."""
    vol = open_volume(data[0])
    export(vol, "cubic", tmp_path / "ref.tif", planes="xz")
    with distributed.Client(cluster) as client:
        client.run(_install_counters)
        export(vol, "cubic", tmp_path / "c.tif", planes="xz")
        blocks = sum(c["blocks"] for c in client.run(_counts).values())
    ref, out = _read(tmp_path / "ref.tif"), _read(tmp_path / "c.tif")
    assert ref.max() > 0 and np.array_equal(out, ref)
    assert blocks == 16  # every chunk computed on the cluster, once
    assert not list(tmp_path.glob("*.partial*"))


def test_model_reaches_each_worker_once(cluster, data, tmp_path):
    vol = open_volume(data[0])
    with distributed.Client(cluster) as client:
        client.run(_install_counters)
        export(vol, data[1], tmp_path / "m.ome.zarr", planes="xz")
        counts = client.run(_counts)
    assert [c["loads"] for c in counts.values()] == [1, 1], counts
    assert sum(c["blocks"] for c in counts.values()) == 16 and all(c["blocks"] for c in counts.values())


@pytest.mark.parametrize("model", ["cubic", "trained"])
def test_cli_local2_equals_single_process(data, tmp_path, model):
    stack, trained = data
    m = str(trained) if model == "trained" else "cubic"
    one, two = tmp_path / "one.ome.zarr", tmp_path / "two.ome.zarr"
    assert main(["apply", str(stack), "--model", m, "-o", str(one), "-q", "--device", "cpu"]) == 0
    assert main(["apply", str(stack), "--model", m, "-o", str(two), "-q", "--device", "cpu",
                 "--scheduler", "local:2"]) == 0
    a, b = _read(one), _read(two)
    assert a.shape == (33, 512, 96) and a.max() > 0 and np.array_equal(a, b)
    assert distributed.client._get_global_client() is None  # the CLI closed its client


def test_resume_under_cluster_skips_finished_blocks(cluster, data, tmp_path):
    vol = open_volume(data[0])
    out = tmp_path / "r.ome.zarr"
    export(vol, "cubic", tmp_path / "ref.ome.zarr", planes="xz")

    def stop(done, total):
        raise KeyboardInterrupt

    with distributed.Client(cluster) as client:
        with pytest.raises(KeyboardInterrupt):
            export(vol, "cubic", out, planes="xz", progress=stop)  # block 1 of 2 written, then interrupted
        client.run(_install_counters)
        seen = []
        export(vol, "cubic", out, planes="xz", progress=lambda d, t: seen.append(d))
        blocks = sum(c["blocks"] for c in client.run(_counts).values())
    assert seen[0] == 2 and blocks == 8  # only the second block's 8 chunks were computed
    assert np.array_equal(_read(out), _read(tmp_path / "ref.ome.zarr"))


def test_killed_worker_is_survived(cluster, data, tmp_path):
    vol = open_volume(data[0])
    export(vol, data[1], tmp_path / "ref.ome.zarr", planes="xz")
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = next(iter(pids.values()))

        def kill_one(done, total):
            if done == 1:
                os.kill(victim, signal.SIGKILL)

        export(vol, data[1], tmp_path / "k.ome.zarr", planes="xz", progress=kill_one)
        client.wait_for_workers(2, timeout=30)
        assert victim not in client.run(os.getpid).values()
    assert np.array_equal(_read(tmp_path / "k.ome.zarr"), _read(tmp_path / "ref.ome.zarr"))


def test_scheduler_specs(tmp_path):
    from napari_emsr.cluster import local_workers, open_client, parse_local

    assert parse_local("local") is None and parse_local("local:3") == 3
    for bad in ("local:0", "local:x", "nonsense", str(tmp_path / "missing.yaml")):
        with pytest.raises(InputError):
            with open_client(bad):
                pass
    w = local_workers(4, gpus=4, cores=16, memory=64)
    assert [x["env"]["CUDA_VISIBLE_DEVICES"] for x in w] == ["0", "1", "2", "3"]
    assert all(x["nthreads"] == 1 and x["silence_logs"] and x["memory_limit"] == 16 for x in w)
    assert all(x["env"]["OMP_NUM_THREADS"] == "4" for x in w)
    assert len(local_workers(gpus=2)) == 2 and len(local_workers(gpus=0)) == 1
    assert "CUDA_VISIBLE_DEVICES" not in local_workers(2, gpus=1)[0]["env"]
    y = tmp_path / "slurm.yaml"
    y.write_text("jobqueue: slurm\ncores: 4\nmemory: 8GB\njobs: 2\n")
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install dask-jobqueue"):
            with open_client(y):
                pass
    y.write_text("cores: 4\n")
    with pytest.raises(InputError, match="jobqueue"):
        with open_client(y):
            pass
    with open_client(None) as c:
        assert c is None


def test_reconstruct_trains_here_and_writes_on_the_cluster(data, tmp_path, capsys):
    stack, _ = data
    one, two = tmp_path / "one.ome.zarr", tmp_path / "two.ome.zarr"
    common = ["--fuse", "xz", "--steps", "2", *TINY, "-q"]
    assert main(["reconstruct", str(stack), "-o", str(one), *common]) == 0
    assert main(["reconstruct", str(stack), "-o", str(two), "--scheduler", "local:1", *common]) == 0
    assert np.array_equal(_read(one), _read(two))  # same seed, same model, same bits
    # a scheduler that cannot work is refused before any training
    assert main(["reconstruct", str(stack), "-o", str(tmp_path / "x.ome.zarr"), "--scheduler", "local:zero",
                 *common]) == 2
    assert "--scheduler" in capsys.readouterr().err and not (tmp_path / "x.emsr.pt").exists()
