import dask.array as da
import numpy as np
import pytest

from napari_emsr.errors import InputError, ModelError
from napari_emsr.geometry import output_length
from napari_emsr.io import as_volume, open_volume
from napari_emsr.metrics import psnr
from napari_emsr.reconstruct import export, output_spacing, reconstruct
from napari_emsr.train import TrainConfig, train

TINY = dict(net="rescnn", size="tiny", patch=24, batch=4, device="cpu", val_every=5, preview_every=0)


@pytest.fixture(scope="module")
def tiny_model():
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth

    gt = _ground_truth()[:33, :48, :48]
    vol = as_volume(make_anisotropic(gt, 4, "slab"), spacing=(40.0, 10.0, 10.0))
    return vol, train(vol, TrainConfig(steps=3, **TINY))


def test_cubic_is_lazy_and_keeps_geometry(tiny_stack):
    vol, gt = tiny_stack
    arr = reconstruct(vol, "cubic")
    assert isinstance(arr, da.Array) and arr.dtype == np.uint8
    assert arr.shape == (output_length(9, 4), 48, 48) == (33, 48, 48)
    out = arr.compute()
    np.testing.assert_array_equal(out[::4], np.asarray(vol.data))  # input slice i at output i*F
    assert psnr(gt, out) > 25
    assert output_spacing(vol) == (10.0, 10.0, 10.0)


def _record_restores(arr) -> list[tuple[int, ...]]:
    """The shapes of the plane stacks the graph's engine sends to the network, recorded as it computes."""
    node = next(v for k, v in arr.dask.items() if isinstance(k, str) and k.startswith("emsr-engine"))
    eng = getattr(node, "value", node)  # dask wraps a plain object of the graph in a DataNode
    calls: list[tuple[int, ...]] = []
    orig = eng.restore

    def recording(planes):
        calls.append(planes.shape)
        return orig(planes)

    eng.restore = recording
    return calls


def test_the_engine_is_one_key_of_a_map_blocks_graph(tiny_model):
    """Every chunk task depends on the same engine key, so a cluster receives the model once."""
    vol, model = tiny_model
    arr = reconstruct(vol, model, planes="xz")
    graph = arr.__dask_graph__()
    engines = [k for k in graph if isinstance(k, str) and k.startswith("emsr-engine")]
    assert len(engines) == 1
    chunk_keys = [k for k in graph if isinstance(k, tuple) and k[0] == arr.name]
    assert len(chunk_keys) == arr.npartitions == 48
    deps = graph.get_all_dependencies() if hasattr(graph, "get_all_dependencies") else None
    if deps is not None:
        assert all(deps[k] == {engines[0]} for k in chunk_keys)


def test_one_plane_computes_one_chunk(tiny_model):
    vol, model = tiny_model
    arr = reconstruct(vol, model, planes="xz", deband=False)  # (debanding fits its filters on a probe first)
    assert arr.numblocks[1] == 48  # one xz plane per chunk by default
    calls = _record_restores(arr)
    plane = arr[:, 20, :].compute()
    assert plane.shape == (33, 48) and len(calls) == 1 and calls[0][0] == 1


def test_network_planes_fuse_and_tiling_agree(tiny_model):
    vol, model = tiny_model
    xz = reconstruct(vol, model, planes="xz", chunks=(16, 48), deband=False).compute()
    xz_tiled = reconstruct(vol, model, planes="xz", chunks=(16, 48), tile=24, overlap=8, deband=False).compute()
    yz = reconstruct(vol, model, planes="yz", deband=False).compute()
    fu = reconstruct(vol, model, planes="fuse", chunks=(8, 24), deband=False).compute()
    assert xz.dtype == np.uint8 and xz.shape == yz.shape == fu.shape == (33, 48, 48)
    assert np.abs(xz.astype(int) - xz_tiled.astype(int)).max() <= 3  # smooth blending, tiny residual net
    np.testing.assert_allclose(fu.astype(float), 0.5 * (xz.astype(float) + yz.astype(float)), atol=1.01)


def test_fused_default_chunks_bound_the_yz_work(tiny_model):
    """A fused chunk restores the yz planes crossing it: default chunks are thick so that work stays ~3x."""
    vol, model = tiny_model
    arr = reconstruct(vol, model, planes="fuse", deband=False)  # the network's work (debanding adds its margin)
    calls = _record_restores(arr)
    out = arr.compute(scheduler="synchronous")
    assert sum(int(np.prod(c)) for c in calls) <= 3 * out.size
    ref = reconstruct(vol, model, planes="fuse", chunks=(8, 24), deband=False).compute()
    np.testing.assert_allclose(out.astype(float), ref.astype(float), atol=1.01)


def test_other_axis_and_errors(tiny_model):
    vol, model = tiny_model
    moved = as_volume(np.moveaxis(np.asarray(vol.data), 0, 2), spacing=(10.0, 10.0, 40.0))
    with pytest.raises(ModelError, match="axis"):
        reconstruct(moved, model, axis=2)
    arr = reconstruct(moved, "cubic", axis=2)
    assert arr.shape == (48, 48, 33)
    with pytest.raises(ModelError, match="factor"):
        reconstruct(as_volume(vol.data, spacing=(80.0, 10.0, 10.0)), model)
    with pytest.raises(InputError, match="factor"):
        reconstruct(as_volume(vol.data), "cubic")
    with pytest.raises(InputError):
        reconstruct(vol, "cubic", planes="xy")


def test_export_zarr_resumes_and_tiff_is_atomic(tiny_model, tmp_path):
    vol, model = tiny_model
    out = tmp_path / "iso.ome.zarr"
    calls = {"n": 0}

    def boom(done, total):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(vol, model, out, planes="xz", chunks=(16, 48), progress=boom)
    with pytest.raises(InputError, match="unfinished export"):
        open_volume(out)  # an unfinished output does not look finished
    export(vol, model, out, planes="xz", chunks=(16, 48))
    back = open_volume(out)
    assert back.spacing == (10.0, 10.0, 10.0)
    ref = reconstruct(vol, model, planes="xz", chunks=(16, 48)).compute()
    np.testing.assert_array_equal(np.asarray(back.data), ref)
    tif = export(vol, "cubic", tmp_path / "iso.tif", planes="xz")
    assert open_volume(tif).shape == (33, 48, 48)


def test_distributed_sends_model_once(tiny_model, tmp_path):
    distributed = pytest.importorskip("distributed")
    vol, model = tiny_model
    arr = reconstruct(vol, model, planes="xz", chunks=(8, 48))
    with distributed.Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        got = client.compute(arr).result()
    np.testing.assert_array_equal(got, arr.compute(scheduler="synchronous"))
    # the engine (model) is a single graph key that every chunk task depends on
    keys = [k for k in dict(arr.dask) if isinstance(k, str) and k.startswith("emsr-engine")]
    assert len(keys) == 1


# ------------------------------------------------------------------------ out of memory: smaller batches, tiles
class _OutOfMemoryAbove:
    """Wraps a network and raises torch's real OutOfMemoryError for inputs of more than ``limit`` values (as a
    GPU would for a batch or tile too large for it); records the input shapes it ran and the errors it raised."""

    def __init__(self, net, limit: int, error=None):
        self.net, self.limit, self.error = net, limit, error
        self.ran: list[tuple[int, ...]] = []
        self.raised = 0

    def __getattr__(self, name):
        return getattr(self.net, name)

    def __call__(self, x):
        import torch

        if x.numel() > self.limit:
            self.raised += 1
            raise self.error or torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {x.numel() * 4 * 64} bytes (injected by the test)")
        self.ran.append(tuple(x.shape))
        return self.net(x)


@pytest.fixture(scope="module")
def wide_model():
    """A (9, 96, 96) stack at F = 4 and a tiny model trained on it for 3 steps (xz planes of 33 x 96 px)."""
    from napari_emsr.degrade import make_anisotropic
    from napari_emsr.sample import _ground_truth

    gt = _ground_truth()[:33, :96, :96]
    vol = as_volume(make_anisotropic(gt, 4, "slab"), spacing=(40.0, 10.0, 10.0))
    return vol, train(vol, TrainConfig(steps=3, **TINY))


def _failing(monkeypatch, model, limit, error=None):
    net = _OutOfMemoryAbove(model.network("cpu"), limit, error)
    monkeypatch.setattr(model, "network", lambda device="cpu", compiled=False: net)
    return net


def test_out_of_memory_retries_with_smaller_batches(wide_model, monkeypatch, caplog):
    """Batches of 8 planes are 'too large': the chunk is restored again in batches of 4, 2, 1 (the output is the
    same, bit for bit) and later chunks start at the size that worked instead of failing again."""
    vol, model = wide_model
    ref = reconstruct(vol, model, planes="fuse", chunks=(16, 96), deband=False).compute(scheduler="synchronous")
    net = _failing(monkeypatch, model, limit=2 * 33 * 96)  # two planes of 33 x 96 fit, four do not
    with caplog.at_level("WARNING", logger="napari_emsr.reconstruct"):
        out = reconstruct(vol, model, planes="fuse", chunks=(16, 96), deband=False).compute(scheduler="synchronous")
    assert np.array_equal(out, ref)
    assert net.raised == 2  # 8 -> 4 -> 2 once, for the first chunk only
    assert {s[0] for s in net.ran} == {2} and sum(s[0] for s in net.ran) == 6 * 16 + 6 * 96  # xz + yz planes
    assert sum("out of memory" in r.message for r in caplog.records) == 2


def test_out_of_memory_retries_with_smaller_tiles(wide_model, monkeypatch):
    """Not even one 33 x 96 plane fits: batch 1, then tiles of 48 px blended as usual; the result equals the
    run that asked for 48-px tiles, and differs from whole planes only by the blending of the seams."""
    vol, model = wide_model
    whole = reconstruct(vol, model, planes="xz", chunks=(16, 96), overlap=8).compute(scheduler="synchronous")
    tiled = reconstruct(vol, model, planes="xz", chunks=(16, 96), overlap=8, tile=48,
                        batch=1).compute(scheduler="synchronous")
    net = _failing(monkeypatch, model, limit=33 * 96 - 1)
    out = reconstruct(vol, model, planes="xz", chunks=(16, 96), overlap=8).compute(scheduler="synchronous")
    assert np.array_equal(out, tiled)
    assert net.raised == 4 and {s[2:] for s in net.ran} == {(33, 48)}  # 8 -> 4 -> 2 -> 1 plane, then 48-px tiles
    diff = np.abs(out.astype(int) - whole.astype(int))
    assert 0 < diff.max() <= 16 and diff.mean() < 0.5


def test_out_of_memory_gives_up_clearly(wide_model, monkeypatch):
    from napari_emsr.errors import EMSRError

    vol, model = wide_model
    net = _failing(monkeypatch, model, limit=10)
    with pytest.raises(EMSRError, match="ran out of memory restoring planes of 33 x 96 px even one at a time in "
                                        "48-px tiles"):
        reconstruct(vol, model, planes="xz", chunks=(16, 96), overlap=8).compute(scheduler="synchronous")
    assert net.raised == 5 and not net.ran  # batch 8, 4, 2, 1, then one 48-px tile: not below 32 px
    # an error that is not about memory is not retried
    net = _failing(monkeypatch, model, limit=10, error=RuntimeError("Expected 4D input"))
    with pytest.raises(RuntimeError, match="Expected 4D input"):
        reconstruct(vol, model, planes="xz", chunks=(16, 96)).compute(scheduler="synchronous")
    assert net.raised == 1


def test_fusedexport_chunks_keep_the_network_margin_small(wide_model):
    """A fused chunk restores its xz and its yz planes, each with a margin on two sides: square chunks keep that
    near the chunk itself, where rows of a few px (what a deep stack got) cost the yz direction many times it."""
    from napari_emsr.reconstruct import export_chunks

    vol, model = wide_model
    voxels = 33 * 96 * 96
    assert export_chunks(vol, "fuse", target=40_000) == (96, 96)  # eight margins of 32 px: the volume
    cy, cx = export_chunks(vol, "fuse", target=40_000, margin=8)
    assert cy == cx == 64  # never narrower than eight margins: at most 25 % more work
    assert export_chunks(vol, "fuse") == (96, 96)  # a small volume is one chunk
    work = {}
    for name, chunks in {"square": (cy, cx), "rows": (12, 96)}.items():
        arr = reconstruct(vol, model, planes="fuse", chunks=chunks, deband=False, margin=8)
        calls = _record_restores(arr)
        out = arr.compute(scheduler="synchronous")
        work[name] = (sum(n * h * w for n, h, w in calls) / (2 * voxels), out)
    assert work["square"][0] <= 1.25 and work["rows"][0] > 1.5, work
    # the chunking changes the work; the result only where the network reaches past an 8-px margin (tiny net: 11)
    diff = np.abs(work["square"][1].astype(int) - work["rows"][1].astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_fused_chunks_read_and_interpolate_once(tiny_model):
    """A fused chunk takes its xz and its yz planes from one interpolated block: one read per chunk, and the
    result is the mean of the two directions computed on their own (float input: within float rounding)."""
    vol, model = tiny_model
    data = np.asarray(vol.data).astype(np.float32)
    fvol = as_volume(data, spacing=vol.spacing)
    kw = dict(chunks=(16, 24), deband=False, device="cpu")
    fu = reconstruct(fvol, model, planes="fuse", **kw)
    node = next(v for k, v in fu.dask.items() if isinstance(k, str) and k.startswith("emsr-engine"))
    eng = getattr(node, "value", node)
    reads = []
    orig = eng.read

    def counting(region, z0=0):
        reads.append(region.shape)
        return orig(region, z0)

    eng.read = counting
    out = fu.compute(scheduler="synchronous")
    assert len(reads) == fu.numblocks[1] * fu.numblocks[2]  # one read per chunk, both directions
    xz = reconstruct(fvol, model, planes="xz", **kw).compute()
    yz = reconstruct(fvol, model, planes="yz", **kw).compute()
    np.testing.assert_allclose(out, 0.5 * (xz + yz), atol=1e-4)


def test_a_model_meets_a_stack_of_another_bit_depth_in_the_stacks_own_range(tiny_stack):
    from napari_emsr.model import robust_range

    vol, _ = tiny_stack
    wide = as_volume(np.asarray(vol.data).astype(np.uint16) * 100, spacing=vol.spacing)  # 16-bit, x 100
    model = train(wide, TrainConfig(factor=4, steps=3, net="rescnn", size="tiny", patch=24, batch=2, device="cpu",
                                    val_every=3, preview_every=0))
    assert model.for_stack(wide.data) == (model, None)  # its own stack: the model as it is
    # another region a little brighter: still in the model's own range
    assert model.for_stack(np.asarray(wide.data, np.float32) * 1.2)[0] is model
    # the same tissue in 8 bits: the model as it is would see intensities 100 times too small
    cubic = np.asarray(reconstruct(vol, "cubic", planes="xz").compute(), np.float32)
    ruined = np.asarray(reconstruct(vol, model, planes="xz", deband=False).compute(), np.float32)
    assert np.abs(ruined - cubic).mean() > 20  # what a user got, with exit code 0
    scaled, note = model.for_stack(vol.data)
    assert "lie far from the ones the model was trained on" in note and "scaled by its own range" in note
    assert scaled.norm == robust_range(vol.data) and model.norm == robust_range(wide.data)
    out = np.asarray(reconstruct(vol, scaled, planes="xz", deband=False).compute(), np.float32)
    assert np.abs(out - cubic).mean() < 5 and np.corrcoef(out.ravel(), cubic.ravel())[0, 1] > 0.95


def test_a_model_of_another_axis_is_refused_with_the_volumes_coarse_axis(tiny_stack):
    from napari_emsr.geometry import coarse_axis, resolve_factor

    vol, _ = tiny_stack
    z_last = as_volume(np.ascontiguousarray(np.moveaxis(np.asarray(vol.data), 0, 2)), spacing=(10.0, 10.0, 40.0))
    assert coarse_axis(z_last.spacing) == 2 and coarse_axis(vol.spacing) == 0 and coarse_axis((10, 10, 10)) is None
    model = train(z_last, TrainConfig(factor=4, axis=2, steps=2, net="rescnn", size="tiny", patch=24, batch=2,
                                      device="cpu", val_every=2, preview_every=0))
    assert reconstruct(z_last, model, planes="xz").shape == (48, 48, 33)
    # on a volume cut along z: the axis is what differs (it used to say F = 1 and advise --factor 4, which made a
    # volume stretched along x)
    with pytest.raises(ModelError, match=r"trained for anisotropic axis 2 .* coarse axis is axis 0 .* --axis 0"):
        reconstruct(vol, model, planes="xz")
    # a factor below 1 along the axis asked for, where the voxel size shows another coarse axis: that axis
    with pytest.raises(InputError, match=r"F = 0.25, below 1; the coarse axis of this volume is axis 2 .* --axis 2"):
        resolve_factor(None, z_last.spacing, 0)
    with pytest.raises(InputError, match="below 1"):  # no coarse axis to name: as before
        resolve_factor(None, (10.0, 40.0, 40.0), 0)


def test_only_another_bit_depth_or_scaling_counts_as_a_far_range():
    from napari_emsr.intensities import Normalisation, far_range, robust_range

    model = Normalisation(70.0, 207.0)  # an 8-bit stack's 0.5-99.5 %
    assert not far_range(model, Normalisation(100.0, 160.0))  # a crop of tissue without the resin: 0.44 of the span
    assert not far_range(model, Normalisation(40.0, 250.0))  # a brighter, wider region
    assert far_range(model, Normalisation(7000.0, 20700.0))  # the same in 16 bits, x 100
    assert far_range(model, Normalisation(0.27, 0.81))  # floats in [0, 1]
    assert far_range(Normalisation(7000.0, 20700.0), model)  # 8 bits under a 16-bit model
    # a bounded read over the whole plane: a stack whose centre is flat (a lumen, resin) is its own model's range
    data = np.random.default_rng(0).integers(0, 255, (20, 1100, 1100), dtype=np.uint8)
    data[:, 300:800, 300:800] = 128
    full, sampled = robust_range(data), robust_range(data, max_extent=512)
    assert not far_range(full, sampled)
    assert abs(full.low - sampled.low) <= 3 and abs(full.high - sampled.high) <= 3


def test_an_export_s_cancel_check_dies_with_it_whatever_other_threads_compute():
    """Each dask computation takes the process's callbacks for its time and puts back what it took: one that
    began in another thread during an export put the export's cancel check back after the export ended, and a
    training that later ran in the export's pooled thread failed with "export cancelled" (seen in the suite)."""
    import threading

    import dask
    import dask.array as dsa

    from napari_emsr.plugin.workers.export_worker import ExportCancelled, ExportJob, stop_between_tasks

    gate, began = threading.Event(), threading.Event()

    def wait(x):
        began.set()
        gate.wait(30)
        return x

    other = threading.Thread(target=lambda: dask.delayed(wait)(1).compute(scheduler="threads"))
    job = ExportJob()
    with stop_between_tasks(job):  # the export, in this thread
        other.start()  # another thread's computation begins while the export runs ...
        began.wait(30)
    gate.set()  # ... and ends after it
    other.join(30)
    job.cancel()
    # a later computation in this same thread is not the export's: it must not be cancelled
    assert int(dsa.ones(4, chunks=2).sum().compute(scheduler="threads")) == 4
    with stop_between_tasks(job), pytest.raises(ExportCancelled):  # the export's own tasks still are
        dsa.ones(4, chunks=2).sum().compute(scheduler="threads")
    # and the checks of ended exports are not kept (each holds its job, and a panel through it)
    from dask.callbacks import Callback

    assert not [cb for cb in Callback.active if getattr(cb[2], "running", None) is not None]
