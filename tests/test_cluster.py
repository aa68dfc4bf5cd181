"""Exports on a dask.distributed cluster of worker processes: TIFF and zarr outputs equal the single-process ones,
the model reaches each worker once, a killed worker is survived and a resumed export skips finished blocks.

The machine running these may be loaded (CI, a shared 2-core box): a worker process that imports torch can take
a minute or more to start or restart, so every wait for workers is generous (:data:`WORKER_START_S`) and the
comm timeouts are raised for the module (less far: a stalled connection attempt must be retried in time); a test
that still hangs fails after ``pytest-timeout``'s limit instead of blocking the run.
"""

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

#: Seconds to wait for worker processes to (re)start and connect (a loaded machine needs far more than a quiet one).
WORKER_START_S = 300

pytestmark = pytest.mark.timeout(900)

TINY = ["--net", "rescnn", "--size", "tiny", "--patch", "24", "--batch", "4", "--device", "cpu", "-q"]
CHUNKS = (32, 96)  # output chunks (y, x): 16 per volume, 8 per zarr block of 256 rows


# --------------------------------------------------------------------------- run in the worker processes
def _install_counters():
    """Count, in this worker process, engine deserialisations and chunks computed.

    The counting wrappers stay installed for the life of the process (the stall of the fault tests may wrap them
    in turn); they count only while ``_test_counts`` is a table. They once raised when :func:`_uninstall` had set
    it to None: every later deserialisation of an engine failed in that worker, and the next test's
    ``Client.replicate`` retried forever (the 'hang of more than 10 minutes').
    """
    import napari_emsr.reconstruct as r

    if not getattr(r, "_test_counting", False):
        r._test_counting = True
        setstate, block = r.Engine.__setstate__, r.Engine.block

        def counted_setstate(self, d):
            counts = getattr(r, "_test_counts", None)
            if counts is not None:
                counts["loads"] += 1
            setstate(self, d)

        def counted_block(self, *a):
            counts = getattr(r, "_test_counts", None)
            if counts is not None:
                counts["blocks"] += 1
            return block(self, *a)

        r.Engine.__setstate__, r.Engine.block = counted_setstate, counted_block
    r._test_counts = {"loads": 0, "blocks": 0}


def _counts():
    import napari_emsr.reconstruct as r

    return dict(r._test_counts)


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    import cloudpickle
    import dask

    from napari_emsr.cluster import NO_AMM

    cloudpickle.register_pickle_by_value(__import__(__name__))
    # NOTE: as the clusters that emsr starts, without the active memory manager, whose ReduceReplicas policy makes
    # the export's Client.replicate wait forever now and then (see napari_emsr.cluster.NO_AMM)
    # NOTE: the connect timeout is not WORKER_START_S: distributed gives one connection attempt a fifth of it and
    # the next ones all of it, so a handshake that stalled once (seen in CI after both workers were SIGKILLed: a
    # restarted worker came back 300 s late and `wait_for_workers` gave up) was retried only after minutes. 60 s
    # retries a stalled attempt after 12 s, still far above what a loaded machine needs on localhost.
    slow = {"distributed.comm.timeouts.connect": "60s", "distributed.comm.timeouts.tcp": "120s", **NO_AMM}
    with dask.config.set(slow), distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                                         dashboard_address=None, silence_logs=40) as c:
        with distributed.Client(c) as client:
            client.wait_for_workers(2, timeout=WORKER_START_S)
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
    monkeypatch.setattr("napari_emsr.reconstruct.export_chunks", lambda vol, planes: CHUNKS)


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
    assert not list(tmp_path.glob("*.emsr-partial-*"))


def test_model_reaches_each_worker_once(cluster, data, tmp_path):
    """The engine (the model) is replicated to every worker before the chunks run: each worker deserialises it
    exactly once, however many chunks it computes. Which worker computes how many chunks is the scheduler's
    choice (under load one worker may take them all), so only the total is checked."""
    vol = open_volume(data[0])
    with distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=WORKER_START_S)
        client.run(_install_counters)
        export(vol, data[1], tmp_path / "m.ome.zarr", planes="xz")
        counts = client.run(_counts)
    assert [c["loads"] for c in counts.values()] == [1, 1], counts
    assert sum(c["blocks"] for c in counts.values()) == 16, counts


@pytest.mark.parametrize("model", ["cubic", "trained", "trained-float32"])
def test_cli_local2_equals_single_process(data, tmp_path, model):
    """Bit for bit. A float32 stack shows what uint8 rounding hides: torch's CPU kernels round differently with
    another thread count (a worker of local:2 on 2 cores is given 1, this process has 2), and every chunk now runs
    with this process's count (was: 971 of 1.6 M float voxels differed; 2 of 6.4 M uint8 voxels by a grey level)."""
    stack, trained = data
    m = str(trained) if model.startswith("trained") else "cubic"
    if model.endswith("float32"):
        src = tmp_path / "float.ome.zarr"
        write_volume(src, as_volume(_read(stack).astype(np.float32), spacing=(40.0, 10.0, 10.0)), pyramid=False)
        stack = src
    one, two = tmp_path / "one.ome.zarr", tmp_path / "two.ome.zarr"
    assert main(["apply", str(stack), "--model", m, "-o", str(one), "-q", "--device", "cpu"]) == 0
    assert main(["apply", str(stack), "--model", m, "-o", str(two), "-q", "--device", "cpu",
                 "--scheduler", "local:2"]) == 0
    a, b = _read(one), _read(two)
    assert a.shape == (33, 512, 96) and a.max() > 0
    assert np.array_equal(a, b), f"{np.count_nonzero(a != b)} of {a.size} voxels differ"
    assert distributed.client._get_global_client() is None  # the CLI closed its client


def test_resume_under_cluster_skips_finished_blocks(cluster, data, tmp_path):
    vol = open_volume(data[0])
    out = tmp_path / "r.ome.zarr"
    export(vol, "cubic", tmp_path / "ref.ome.zarr", planes="xz")

    def stop(done, total):
        if done:  # the first call, before any block, gives the total
            raise KeyboardInterrupt

    with distributed.Client(cluster) as client:
        with pytest.raises(KeyboardInterrupt):
            export(vol, "cubic", out, planes="xz", progress=stop)  # block 1 of 2 written, then interrupted
        client.run(_install_counters)
        seen = []
        export(vol, "cubic", out, planes="xz", progress=lambda d, t: seen.append(d))
        blocks = sum(c["blocks"] for c in client.run(_counts).values())
    assert seen[:2] == [1, 2] and blocks == 8  # only the second block's 8 chunks were computed
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
        client.wait_for_workers(2, timeout=WORKER_START_S)
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
    with open_client("local:1") as c:  # the export's replicate() and the AMM do not mix (cluster.NO_AMM)
        assert not c.amm.running()
        # our workers drop our errors' tracebacks, and a heartbeat's failure while they shut down, from the start
        assert all(c.run(_worker_quiet).values())


def _worker_quiet() -> bool:
    import logging

    from napari_emsr.cluster import _OurErrorsQuiet

    return any(isinstance(f, _OurErrorsQuiet) for f in logging.getLogger("distributed.worker").filters)


def test_a_worker_shutting_down_does_not_print_its_heartbeat_traceback():
    """A worker closing with the cluster can have a heartbeat in flight; it fails with "ConnectionPool closing" and
    distributed logs it as an error with a traceback, which once landed in a refused export's stderr before the
    command's own message. That record is dropped; a heartbeat failing for any other reason is still logged."""
    import logging
    import sys

    from distributed.comm.core import CommClosedError

    from napari_emsr.cluster import _OurErrorsQuiet

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                                 "Failed to communicate with scheduler during heartbeat.", (), info)

    quiet = _OurErrorsQuiet()
    assert not quiet.filter(record(CommClosedError("ConnectionPool closing.")))
    assert quiet.filter(record(CommClosedError("in <TCP (closed)>: Stream is closed")))
    assert quiet.filter(record(TimeoutError("timed out")))
    other = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "Compute Failed", (), None)
    assert quiet.filter(other)


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


# ------------------------------------------------------------------ faults in the middle of a chunk, crashes
def _install_stall(folder: str, slots: int, after: int):
    """In this worker: once it has started ``after`` chunks, the next chunk takes one of ``slots`` stall slots
    (files created exclusively in ``folder``), writes this process's pid beside it and sleeps until killed."""
    import os
    import time

    import napari_emsr.reconstruct as r

    original = getattr(r, "_test_original_block", None) or r.Engine.block
    r._test_original_block = original
    seen = {"n": 0}

    def stalling(self, *a):
        seen["n"] += 1
        if seen["n"] > after:
            for i in range(slots):
                try:
                    os.close(os.open(os.path.join(folder, f"slot-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    continue
                tmp = os.path.join(folder, f"tmp-{i}")
                with open(tmp, "w") as f:
                    f.write(str(os.getpid()))
                os.replace(tmp, os.path.join(folder, f"pid-{i}"))
                time.sleep(300)  # inside the chunk's task: killed here
        return original(self, *a)

    r.Engine.block = stalling


def _install_delay(seconds: float):
    """In this worker: every chunk takes ``seconds`` longer (so that a test can stop a run in its middle)."""
    import time

    import napari_emsr.reconstruct as r

    original = getattr(r, "_test_original_block", None) or r.Engine.block
    r._test_original_block = original

    def slow(self, *a):
        time.sleep(seconds)
        return original(self, *a)

    r.Engine.block = slow


def _uninstall():
    import napari_emsr.reconstruct as r

    original = getattr(r, "_test_original_block", None)
    if original is not None:
        r.Engine.block = original
        r._test_original_block = None
    r._test_counts = None


@pytest.mark.parametrize("victims", [1, 2])
def test_worker_killed_inside_a_chunk(cluster, data, tmp_path, victims):
    """SIGKILL of one worker, or of every worker at once, while it computes a chunk of a tiny trained model (the
    engine's replicas die with them): the chunks run again on the workers left or restarted, the zarr output equals
    the single-process one bit for bit, and no killed process is among the workers afterwards."""
    import threading
    import time

    vol = open_volume(data[0])
    export(vol, data[1], tmp_path / "ref.ome.zarr", planes="xz")
    flags = tmp_path / "flags"
    flags.mkdir()
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + WORKER_START_S
        pids = [flags / f"pid-{i}" for i in range(victims)]
        while not all(p.exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for p in pids:
            if p.exists():
                killed.append(int(p.read_text()))
                os.kill(killed[-1], signal.SIGKILL)

    with distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=WORKER_START_S)
        before = set(client.run(os.getpid).values())
        client.run(_install_stall, str(flags), victims, 3)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            export(vol, data[1], tmp_path / "k.ome.zarr", planes="xz")
        finally:
            t.join(5)
            client.run(_uninstall)
        # NOTE: one worker, not two: the export is done, and when its nanny brings a SIGKILLed worker back is
        # distributed's affair (CI saw one come back more than 300 s late; the next test waits for both again)
        client.wait_for_workers(1, timeout=WORKER_START_S)
        after = set(client.run(os.getpid).values())
    assert len(killed) == victims and set(killed) <= before and not set(killed) & after
    assert np.array_equal(_read(tmp_path / "k.ome.zarr"), _read(tmp_path / "ref.ome.zarr"))


def test_crashed_client_resumes_on_the_cluster(cluster, data, tmp_path):
    """An `emsr apply --scheduler tcp://...` process SIGKILLed mid-export (its cluster lives on): the same
    export run again computes only the chunks of the blocks the marker does not list, and equals an
    uninterrupted export bit for bit."""
    import json
    import subprocess
    import sys
    import time

    from napari_emsr.io.omezarr import INCOMPLETE_MARKER

    stack, model = data
    out = tmp_path / "crash.ome.zarr"
    export(open_volume(stack), model, tmp_path / "ref.ome.zarr", planes="fuse")
    script = (
        "import sys, napari_emsr.reconstruct as r\n"
        f"r.export_chunks = lambda vol, planes: {CHUNKS!r}\n"
        "from napari_emsr.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    with distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=WORKER_START_S)
        client.run(_install_delay, 0.3)
        try:
            proc = subprocess.Popen([sys.executable, "-c", script, "apply", str(stack), "--model", str(model),
                                     "-o", str(out), "--scheduler", cluster.scheduler_address, "-q"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            marker = out / INCOMPLETE_MARKER
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if marker.exists() and json.loads(marker.read_text()).get("done"):
                    break
                time.sleep(0.02)
            proc.kill()
            err = proc.communicate()[1].decode()
            done = json.loads(marker.read_text())["done"]
            assert proc.returncode == -signal.SIGKILL and done == [0], (proc.returncode, done, err)
            # the orphaned tasks of the dead client are released before counting starts
            deadline = time.monotonic() + 60
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            client.run(_uninstall)
        client.run(_install_counters)
        seen = []
        export(open_volume(stack), model, out, planes="fuse", progress=lambda d, t: seen.append(d))
        blocks = sum(c["blocks"] for c in client.run(_counts).values())
        client.run(_uninstall)
    assert seen[:2] == [1, 2] and blocks == 8  # the 8 chunks of block 2; block 1's were not computed again
    assert not (out / INCOMPLETE_MARKER).exists()
    assert np.array_equal(_read(out), _read(tmp_path / "ref.ome.zarr"))
