"""The dock widget with a real viewer and real thread workers: train, stop, resume, reconstruct, export.

The tests drive the panel the way a script would: through its evented parameters (``panel.params`` ...), its
status (``panel.status``) and its public methods; they click buttons only where the button is what is tested.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui

TIMEOUT = 120_000  # ms


def _train(widget, qtbot, resume=False):
    worker = widget.start_training(resume=resume)
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.status.busy, timeout=TIMEOUT)
    return worker


def _wait_idle(widget, qtbot, worker=None):
    """Wait until a task ended (its ``finished`` slots ran); waitSignal could miss a fast one."""
    assert worker is not None
    qtbot.waitUntil(lambda: worker not in widget.workers, timeout=TIMEOUT)


def _notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def test_panel_reads_voxel_size(panel, qtbot):
    assert panel.input_params.layer == "medulla anisotropic"
    assert panel.current_layer().name == "medulla anisotropic"
    assert panel.input_params.spacing == (40.0, 10.0, 10.0)
    assert panel.input_params.factor == pytest.approx(4.0)
    panel.input.factor_box.setValue(3.0)  # the F box sets the z spacing ...
    assert panel.input_params.spacing[0] == pytest.approx(30.0)
    panel.input_params.spacing = (50.0, 10.0, 10.0)  # ... and follows the parameters
    assert panel.input.factor_box.value() == pytest.approx(5.0)
    assert panel.input.spacing_boxes[0].value() == pytest.approx(50.0)
    # the anisotropy measure is computed in a worker and shown
    qtbot.waitUntil(lambda: panel.anisotropy is not None, timeout=TIMEOUT)
    assert panel.input.anisotropy_label.text() not in ("-", "measuring...")
    # ... and so is the section profile "auto" stands for, fitted for the F given (what --profile auto would train
    # with: the fit of the layer's data at that F; the sample read at the F = 5 typed above fits a thicker slab
    # than at its own F = 4)
    from napari_emsr.profile_fit import fit_profile

    data = np.asarray(panel.current_layer().data)
    at = {f: fit_profile(data, f) for f in (4.0, 5.0)}
    assert at[5.0].fwhm > at[4.0].fwhm + 0.2
    profile = panel.method.option_combos["profile"]
    qtbot.waitUntil(lambda: profile.itemText(0) == f"auto: {at[5.0].label}", timeout=TIMEOUT)
    panel.input_params.spacing = (40.0, 10.0, 10.0)
    qtbot.waitUntil(lambda: profile.itemText(0) == f"auto: {at[4.0].label}", timeout=TIMEOUT)
    assert panel.params.options["profile"] == "auto" and panel.training_config().options["profile"] == "auto"
    panel.params.set_option("profile", "slab")
    assert panel.training_config().options["profile"] == "slab"
    assert profile.currentData() == "slab"
    # the device list and the network sizes come from workers (they need torch)
    qtbot.waitUntil(lambda: panel.device.device_combo.findData("cpu") >= 0, timeout=TIMEOUT)
    from napari_emsr.nets import net_sizes

    sizes = panel.method.size_combo
    qtbot.waitUntil(lambda: sizes.count() == len(net_sizes(panel.params.net)), timeout=TIMEOUT)
    assert [sizes.itemData(i) for i in range(sizes.count())] == list(net_sizes(panel.params.net))
    assert sizes.currentData() == "tiny"


def test_widgets_and_parameters_agree(panel):
    """Each picker writes its parameter and shows it when a script sets it; pickers come from the registries."""
    from napari_emsr.methods import get_method, method_names
    from napari_emsr.nets import net_names

    method = panel.method
    assert [method.method_combo.itemData(i) for i in range(method.method_combo.count())] == method_names()
    assert [method.net_combo.itemData(i) for i in range(method.net_combo.count())] == net_names()
    method.patch_box.setValue(48)
    assert panel.params.patch == 48
    panel.params.patch = 40
    assert method.patch_box.value() == 40
    method.budget_kind.setCurrentIndex(method.budget_kind.findData("minutes"))
    assert panel.params.budget == "minutes"
    method.budget_value.setValue(7)
    assert panel.params.minutes == 7 and panel.params.steps == 6
    assert panel.training_config().minutes == 7.0 and panel.training_config().steps is None
    panel.params.budget = "steps"
    assert method.budget_value.value() == 6
    # the option pickers are the picked method's declared options with choices
    declared = [o.name for o in get_method("isotropic").options if o.choices]
    assert list(method.option_combos) == declared
    method.method_combo.setCurrentIndex(method.method_combo.findData("cubic"))
    assert panel.params.method == "cubic" and panel.params.options == {}
    assert method.option_combos == {} and not panel.train.train_button.isEnabled()
    panel.params.method = "isotropic"
    assert method.method_combo.currentData() == "isotropic" and list(method.option_combos) == declared
    assert panel.params.options == {o.name: o.default for o in get_method("isotropic").options}
    panel.device.device_combo.setCurrentIndex(panel.device.device_combo.findData("auto"))
    assert panel.params.device == "auto"
    panel.reconstruct.checks["yz"].setChecked(True)
    assert panel.reconstruct_params.planes == ("xz", "yz")
    panel.reconstruct_params.planes = ("fuse",)
    assert [p for p, c in panel.reconstruct.checks.items() if c.isChecked()] == ["fuse"]
    panel.reconstruct_params.export_planes = "yz"
    assert panel.export.planes_combo.currentData() == "yz"


def test_train_updates_progress_plot_preview(panel, qtbot):
    seen, states, planes = [], [], {}
    panel.status.events.state.connect(states.append)
    viewer = panel.viewer

    def look(update):
        seen.append(update.event.step)
        for name in ("emsr preview input", "emsr preview cubic", "emsr preview"):
            if name in viewer.layers:
                planes[name] = (np.array(viewer.layers[name].data), dict(viewer.layers[name].metadata))

    worker = panel.start_training()
    worker.yielded.connect(look)
    assert panel.status.state == "running"
    assert not panel.train.train_button.isEnabled() and panel.train.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert states == ["running", "idle"]
    assert seen and seen[-1] == 6
    assert panel.model is not None and panel.model.step == 6
    assert panel.status.step == panel.status.total == 6 and panel.status.gain is not None
    assert panel.train.progress_bar.value() == 6
    assert panel.plot.steps == [1, 2, 3, 4, 5, 6]
    # the log-scaled loss axis has values written on it
    from napari_emsr.plugin.widgets.plot_widget import loss_ticks

    ticks = loss_ticks(panel.plot.losses)
    assert len(ticks) >= 2 and panel.plot.loss_plot.getAxis("left")._tickLevels == [ticks]
    assert len(panel.plot.gains) >= 2
    assert "Training ended at step 6" in panel.status.message == panel.status_label.text()
    # napari's activity-dock progress (closed by napari when the worker finishes)
    assert worker.pbar.total == 6 and worker.pbar.n >= 1
    # one xz plane three times while training ran: the input's sections, cubic and restored, the same shape
    (plane, meta), (cubic, _), (preview, _) = (planes[n] for n in ("emsr preview input", "emsr preview cubic",
                                                                   "emsr preview"))
    assert preview.ndim == 2 and preview.shape == cubic.shape == plane.shape
    # the preview plane is an isotropic xz plane: z grows F times
    source = viewer.layers["medulla anisotropic"]
    assert preview.shape[0] >= (source.data.shape[0] - 1) * 4
    y = meta["y"]
    assert y == source.data.shape[1] // 2  # the plane the trainer restores (its preview index)
    sections = np.asarray(source.data[:, y, :], np.float32)
    np.testing.assert_array_equal(plane[::4], sections[: len(plane[::4])])  # section i at output row i * F
    # the cubic plane is that same plane interpolated: it passes through the sections
    np.testing.assert_allclose(cubic[::4], sections[: len(cubic[::4])], atol=1.0)
    # the preview planes go when training ends
    assert not any(name.startswith("emsr preview") for name in [layer.name for layer in viewer.layers])
    assert panel.train.train_button.isEnabled() and panel.train.resume_button.isEnabled()
    assert panel.models.save_button.isEnabled()


def test_a_time_budget_shows_time_and_looks_before_the_end(panel, qtbot):
    """With a budget in minutes, the bars show elapsed and remaining time (not steps), and the gain plot and the
    preview get points during the run even when the trainer's step rates would give none before the end."""
    from napari_emsr.plugin._widget import PREVIEW_LAYER

    panel.params.budget, panel.params.minutes = "minutes", 0.15  # 9 s
    panel.params.val_every = panel.params.preview_every = 10**6  # the trainer's own would come after the end
    during = {"bars": [], "gains": 0, "preview": False}

    def watch(_):
        if panel.status.state == "running":
            during["bars"].append(panel.train.progress_bar.format())
            during["gains"] = len(panel.plot.gains)
            during["preview"] |= PREVIEW_LAYER in panel.viewer.layers

    panel.status.events.step.connect(watch)
    etas = []
    worker = panel.start_training()
    worker.pbar.events.eta.connect(lambda event: etas.append(event.value))
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert during["gains"] >= 1 and during["preview"], during
    bars = during["bars"]
    assert bars and all("elapsed" in t and "left" in t and "/" not in t.split("·")[0] for t in bars), bars[-3:]
    assert bars[0].startswith("step ") and bars[-1].endswith(("0:00 left", "0:01 left")), bars[-3:]
    assert worker.pbar.total == 9  # napari's activity dock counts seconds
    assert any("elapsed" in e and "left" in e for e in etas), etas[-3:]
    assert panel.model is not None and 8 <= panel.model.history[-1]["elapsed"] <= 30


def test_stop_keeps_model_and_resume_continues(panel, qtbot):
    panel.params.steps = 5000
    panel.start_training()
    qtbot.waitUntil(lambda: len(panel.plot.steps) >= 3, timeout=TIMEOUT)
    qtbot.mouseClick(panel.train.stop_button, _left())
    assert panel.status.state in ("stopping", "idle")
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    stopped_at = panel.model.step
    assert 3 <= stopped_at < 5000
    assert panel.train.train_button.isEnabled()
    assert panel.train.resume_button.isEnabled()
    assert not panel.train.stop_button.isEnabled()

    panel.params.steps = 4
    qtbot.mouseClick(panel.train.resume_button, _left())
    assert panel.status.busy
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert panel.model.step == stopped_at + 4
    assert panel.plot.steps[-1] == stopped_at + 4
    assert panel.plot.steps[0] == 1  # the plot continues instead of starting over


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_reconstruct_is_lazy_and_one_plane_computes_one_chunk(panel, qtbot):
    import sys

    import dask.array as da

    viewer = panel.viewer
    _train(panel, qtbot)
    source = viewer.layers["medulla anisotropic"]
    # Count what the reconstruction reads from the input: a lazy input chunked along y.
    reads = []

    def read(block, block_info=None):
        # Counted: the reads the reconstruction makes (its code is on the stack: it computes in the calling
        # thread). Not counted: napari showing the input layer (with these chunks one xy plane of the input
        # reads every block, and napari slices it again, in its own threads, whenever the restored layers change
        # the dims) and the input's own measures (profile fit, anisotropy).
        frame, ours = sys._getframe(1), False
        while frame is not None and not ours:
            name = frame.f_code.co_filename.replace("\\", "/")
            ours = "napari_emsr/" in name and not name.endswith(("profile_fit.py", "metrics.py"))
            frame = frame.f_back
        if ours:
            reads.append(tuple(block_info[0]["chunk-location"]))
        return block

    nz, ny_in, nx_in = source.data.shape
    source.data = da.from_array(np.asarray(source.data), chunks=(nz, 16, nx_in)).map_blocks(
        read, dtype=source.data.dtype
    )
    qtbot.waitUntil(lambda: not panel.inputs.running, timeout=TIMEOUT)
    qtbot.wait(50)
    reads.clear()
    panel.reconstruct_params.planes = ("xz", "yz")
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)
    qtbot.wait(200)
    # Adding the layers fitted the deband filters on the central probe (in the worker) and showed one xz plane:
    # the input blocks of the probe and those near that y were read, never the whole volume (which would read
    # every one of the ny_in / 16 blocks).
    from napari_emsr.deband import probe_region

    y0, y1, _, _ = probe_region((ny_in, nx_in))
    m = 32  # the yz probe reads its rows with the network's lateral margin
    probe = set(range(max(0, y0 - m) // 16, (min(ny_in, y1 + m) - 1) // 16 + 1))
    blocks = {loc[1] for loc in reads}
    assert 0 < len(blocks) < ny_in // 16 and len(blocks - probe) <= 3, (sorted(blocks), sorted(probe))
    xz, yz = panel.reconstructed_layers
    assert xz.visible and not yz.visible  # yz planes in the xz view would need every chunk
    for layer in (xz, yz):
        assert isinstance(layer.data.dask, da.Array)
        np.testing.assert_allclose(layer.scale, (10, 10, 10))
        np.testing.assert_allclose(layer.translate, source.translate)
        assert not layer.multiscale
        assert layer.data.dtype == source.data.dtype
        assert layer.data.shape[0] >= (source.data.shape[0] - 1) * 4 + 1
    # xz planes are paged through y
    assert tuple(viewer.dims.order) == (1, 0, 2)

    # Count the chunks computed while showing xz planes (a counter around the core's array), once the first
    # plane shown is restored.
    qtbot.waitUntil(lambda: xz.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    computed = []
    lock = threading.Lock()

    def count(block, block_info=None):
        with lock:
            computed.append(tuple(block_info[0]["chunk-location"]))
        return block

    xz.data.dask = xz.data.dask.map_blocks(count, dtype=xz.data.dtype)
    ny = xz.data.shape[1]
    for y in (ny // 3, ny // 2 + 1):
        computed.clear()
        viewer.dims.set_point(1, y * 10.0)
        # the plane is restored in the background, then shown
        qtbot.waitUntil(lambda: xz.data.view == "restored", timeout=TIMEOUT)
        assert {loc[1] for loc in computed} == {y}, f"viewing one xz plane computed chunks {sorted(set(computed))}"
        assert len(set(computed)) <= max(1, int(np.prod(xz.data.dask.numblocks)) // ny)
        np.testing.assert_array_equal(np.asarray(xz._slice.image.view), np.asarray(xz.data.dask[:, y, :]))


def test_side_by_side_shows_input_cubic_and_restored_at_one_plane_and_flips(panel, qtbot):
    viewer = panel.viewer
    _train(panel, qtbot)
    # the preview went with training
    assert not any(name.startswith("emsr preview") for name in [layer.name for layer in viewer.layers])
    qtbot.mouseClick(panel.compare.side_button, _left())  # one click: restores xz planes and adds cubic first
    qtbot.waitUntil(lambda: panel.comparing is not None, timeout=TIMEOUT)
    source, cubic, restored = panel.comparing
    assert (source.name, cubic.name, restored.name) == (
        "medulla anisotropic", "medulla anisotropic cubic", "medulla anisotropic xz-restored"
    )
    assert viewer.grid.enabled and tuple(viewer.dims.order) == (1, 0, 2)
    shown = [layer for layer in viewer.layers if layer.visible]
    assert [viewer.grid.position(viewer.layers.index(layer), viewer.layers) for layer in (source, cubic, restored)] \
        == [(0, 0), (0, 1), (0, 2)] and len(shown) == 3  # input | cubic | restored, nothing else
    # the cells are labelled in three short, distinct words (the layers' names share the input's long name)
    assert panel.comparer.labels() == "input | cubic | restored"
    assert viewer.canvas.overlays["text"].visible and not any(layer.name_overlay.visible for layer in shown)
    assert viewer.canvas.overlays["current_slice"].visible
    # the same plane on all three: y on the slider, in world units
    y = int(round(viewer.dims.point[1] / 10.0))
    qtbot.waitUntil(lambda: restored.data.view == "restored" and cubic.data.view == "restored", timeout=TIMEOUT)
    qtbot.waitUntil(
        lambda: np.array_equal(np.asarray(restored._slice.image.view), np.asarray(restored.data.dask[:, y, :])),
        timeout=TIMEOUT,
    )
    from napari_emsr.reconstruct import reconstruct

    expected_cubic = np.asarray(reconstruct(panel.current_volume(), "cubic", planes="xz")[:, y, :])
    np.testing.assert_array_equal(np.asarray(cubic._slice.image.view), expected_cubic)
    np.testing.assert_array_equal(np.asarray(source._slice.image.view), np.asarray(source.data[:, y, :]))
    # Flip: one view, cubic then restored, at the same plane
    qtbot.mouseClick(panel.compare.flip_button, _left())
    assert not viewer.grid.enabled and cubic.visible and not restored.visible and not source.visible
    qtbot.mouseClick(panel.compare.flip_button, _left())
    assert restored.visible and not cubic.visible and int(round(viewer.dims.point[1] / 10.0)) == y
    # the other orientation: yz-restored is made and shown beside the same layers
    panel.show_side_by_side("yz")
    qtbot.waitUntil(lambda: panel.comparing[2].name.endswith("yz-restored"), timeout=TIMEOUT)
    assert tuple(viewer.dims.order) == (2, 0, 1) and viewer.grid.enabled


def test_flip_without_a_comparison_says_what_to_do(panel):
    panel.flip_compare()
    assert "press Side by side first" in panel.status_label.text()


def test_fused_layer_warns_about_its_cost_on_a_cpu(panel, qtbot):
    _train(panel, qtbot)
    panel.params.device = "auto"  # the default: the CPU on a machine without a GPU
    panel.reconstruct_params.planes = ("fuse",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)  # fused and its uncertainty
    fused = panel.reconstructed_layers[0]
    assert fused.data.chunks[1][0] == 64
    from napari_emsr.device import resolve_device

    warned = any("fused layer restores 64 rows" in m and "background" in m for m in _notifications())
    assert warned == (resolve_device("auto") == "cpu")


class _EventLoopDelay:
    """A 10 ms QTimer on the GUI thread: the longest gap between its ticks is what a user would feel."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.ticks = [time.perf_counter()]
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def worst(self) -> float:
        self.timer.stop()
        return float(np.max(np.diff([*self.ticks, time.perf_counter()])))


@pytest.fixture
def sync_slicing():
    """napari's asynchronous rendering off (its default): napari slices on the GUI thread."""
    from napari.settings import get_settings

    settings = get_settings().experimental
    before = settings.async_
    settings.async_ = False
    yield
    settings.async_ = before


def test_rolling_axes_or_3d_never_computes_the_volume(panel, qtbot, sync_slicing):
    """Views that are not the planes a restored layer is chunked for show interpolation, compute no block and
    say so; napari's asynchronous rendering stays off and the event loop keeps running."""
    from napari.settings import get_settings

    from napari_emsr.reconstruct import reconstruct

    viewer = panel.viewer
    _train(panel, qtbot)
    panel.reconstruct_params.planes = ("xz", "yz", "fuse")
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 4, timeout=TIMEOUT)
    xz, yz, fused, unc = panel.reconstructed_layers
    qtbot.waitUntil(lambda: xz.data.view == fused.data.view == unc.data.view == "restored", timeout=TIMEOUT)
    qtbot.waitUntil(lambda: panel.block_worker is None, timeout=TIMEOUT)
    assert not get_settings().experimental.async_, "the panel must not change napari's preference"
    assert not yz.visible

    computed = []

    def count(block, block_info=None):
        computed.append(block_info[0]["chunk-location"])
        return block

    for layer in (xz, yz, fused):
        layer.data.dask = layer.data.dask.map_blocks(count, dtype=layer.data.dtype)
    # the fused layer and its uncertainty compute their blocks together, from one stacked array
    fused.data.joint = unc.data.joint = fused.data.joint.map_blocks(count, dtype=fused.data.dtype)
    yz.visible = True  # the eye icon of the hidden yz layer, in the xz view
    delay = _EventLoopDelay()
    for change in (
        lambda: setattr(viewer.dims, "order", (0, 1, 2)),  # back to xy
        lambda: viewer.dims.set_point(0, 200.0),  # page through z
        viewer.dims.transpose,
        lambda: setattr(viewer.dims, "ndisplay", 3),
        lambda: setattr(viewer.dims, "ndisplay", 2),
    ):
        change()
        qtbot.wait(30)
        if viewer.dims.ndisplay == 3:  # restored plane by plane: hidden in 3D, and the status line says so
            assert not any(layer.visible for layer in (xz, yz, fused, unc))
            assert "hidden" in panel.status_label.text()
    assert all(layer.visible for layer in (xz, yz, fused, unc))  # back in 2D
    assert delay.worst() < 1.0
    assert computed == [], "a view the layers are not chunked for computed blocks"
    assert {layer.data.view for layer in (xz, yz, fused)} == {"interpolated"}
    assert unc.data.view == "nothing"  # no stand-in for an uncertainty
    told = [m for m in _notifications() if "shows cubic interpolation in this view" in m]
    for label in ("xz-restored", "yz-restored", "fused"):
        assert any(m.startswith(f"napari-emsr: {label}") for m in told), told
    # the xy plane shown is the cubic interpolation of the input at that z
    viewer.dims.order = (0, 1, 2)
    z = int(round(viewer.dims.point[0] / 10.0))
    cubic = np.asarray(reconstruct(panel.current_volume(), "cubic", planes="xz")[z], np.float32)
    shown = np.asarray(xz._slice.image.view, np.float32)
    assert shown.shape == cubic.shape and np.abs(shown - cubic).max() <= 2
    # the yz view is what yz-restored is chunked for: one x plane's block is restored, in the background
    viewer.dims.order = (2, 0, 1)
    qtbot.waitUntil(lambda: yz.data.view == "restored", timeout=TIMEOUT)
    assert len(computed) == 1 and {xz.data.view, fused.data.view} == {"interpolated"}


def test_fused_blocks_arrive_without_freezing_napari(panel, qtbot, sync_slicing):
    """With napari's asynchronous rendering off, a new fused block is restored in a worker: the event loop keeps
    running, cubic interpolation shows meanwhile, the status line says what is computed, then the block shows."""
    viewer = panel.viewer
    _train(panel, qtbot)
    panel.reconstruct_params.planes = ("fuse",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)
    fused, unc = panel.reconstructed_layers
    qtbot.waitUntil(lambda: fused.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    first_y = int(round(viewer.dims.point[1] / 10.0))
    y = (first_y + 64) % fused.data.shape[1]  # a plane of another block
    delay = _EventLoopDelay()
    viewer.dims.set_point(1, y * 10.0)
    assert fused.data.view == "computing"
    qtbot.waitUntil(lambda: "Restoring fused" in panel.status_label.text(), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: fused.data.view == "restored", timeout=TIMEOUT)
    assert delay.worst() < 1.0
    expected = np.asarray(fused.data.dask[:, y, :])
    qtbot.waitUntil(lambda: np.array_equal(np.asarray(fused._slice.image.view), expected), timeout=TIMEOUT)
    assert fused.data.computed + unc.data.computed == 2  # one network run per block fills both layers
    assert unc.data.has_block((0, y // 64, 0))


def _slow_xz_block(panel, qtbot):
    """A cubic xz-restored layer whose blocks wait for the returned gate, and the block of y = 3 asked for."""
    panel.params.method = "cubic"
    panel.reconstruct_params.planes = ("xz",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)
    xz = panel.reconstructed_layers[0]
    qtbot.waitUntil(lambda: xz.data.view == "restored" and panel.block_worker is None, timeout=TIMEOUT)
    gate = threading.Event()

    def slow(block, block_info=None):
        gate.wait(30)
        return block

    xz.data.dask = xz.data.dask.map_blocks(slow, dtype=xz.data.dtype, meta=np.empty((0, 0, 0), xz.data.dtype))
    panel.viewer.dims.set_point(1, 30.0)
    return xz, gate


def test_cancel_drops_the_blocks_asked_for(panel, qtbot, sync_slicing):
    xz, gate = _slow_xz_block(panel, qtbot)
    qtbot.waitUntil(lambda: "Restoring xz-restored, y 3-3" in panel.status_label.text(), timeout=TIMEOUT)
    panel.viewer.dims.set_point(1, 40.0)  # asked for while the first is computed
    assert xz.data.wanted
    panel.cancel_blocks()
    assert not xz.data.wanted
    gate.set()
    qtbot.waitUntil(lambda: panel.block_worker is None, timeout=TIMEOUT)
    assert xz.data.view == "computing" and xz.data.computed == 2  # the block started finished; y = 4 never ran


def test_a_block_of_a_deleted_layer_leaves_the_status_line_alone(panel, qtbot, sync_slicing):
    xz, gate = _slow_xz_block(panel, qtbot)
    qtbot.waitUntil(lambda: "Restoring xz-restored" in panel.status_label.text(), timeout=TIMEOUT)
    # the stack and its restored layer deleted while the block is computed, another stack picked
    source = panel.current_layer()
    items = [panel.input.layer_combo.itemText(i) for i in range(panel.input.layer_combo.count())]
    assert items == [source.name]  # the panel's own results are not stacks to train on
    panel.viewer.layers.remove(source)
    # its stack gone, the panel picks no restored layer as its input (it picked xz-restored, F = 1)
    assert panel.input_params.layer is None and panel.input.layer_combo.count() == 0
    panel.viewer.layers.remove(xz)
    other = panel.viewer.add_image(np.zeros((9, 32, 32), np.uint8), name="other", scale=(40.0, 10.0, 10.0))
    panel.input.set_layer(other)
    qtbot.waitUntil(lambda: panel.status_label.text().startswith("Input: other"), timeout=TIMEOUT)
    qtbot.wait(1500)  # the block's clock would tick "Restoring xz-restored ..." over it once a second
    assert panel.status_label.text().startswith("Input: other"), panel.status_label.text()
    gate.set()
    qtbot.waitUntil(lambda: panel.block_worker is None, timeout=TIMEOUT)
    assert panel.status_label.text().startswith("Input: other"), panel.status_label.text()


def test_rolling_to_the_yz_view_shows_the_layer_restored_for_it(panel, qtbot):
    viewer = panel.viewer
    panel.params.method = "cubic"
    panel.reconstruct_params.planes = ("xz", "yz")
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 2, timeout=TIMEOUT)
    xz, yz = panel.reconstructed_layers
    assert xz.name.endswith("xz-restored") and yz.name.endswith("yz-restored")
    assert xz.visible and not yz.visible  # the xz view: yz planes would show only interpolation
    viewer.dims.order = (2, 0, 1)  # the yz view (x sliced): yz-restored is the one restored here (it stayed hidden)
    assert yz.visible and not xz.visible
    assert "yz view: " in panel.status_label.text() and "swap back" in panel.status_label.text()
    viewer.dims.order = (1, 0, 2)  # and back
    assert xz.visible and not yz.visible
    viewer.dims.order = (0, 1, 2)  # the xy view: neither is restored there, nothing changes
    assert xz.visible and not yz.visible


def test_training_on_a_flat_stack_ends_without_a_nan_figure(panel, qtbot):
    flat = panel.viewer.add_image(np.full((16, 64, 64), 7, np.uint8), name="flat", scale=(40.0, 10.0, 10.0))
    panel.input.set_layer(flat)
    panel.params.steps = 3
    assert panel.start_training() is not None
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    text = panel.status_label.text()
    assert "nan" not in text.lower(), text


def test_reconstruct_without_model_says_what_to_do(panel, qtbot):
    panel.reconstruct_layers(["xz"])
    assert "no model yet: press Train" in panel.status_label.text()
    assert any("no model yet" in m for m in _notifications())
    # while the first training runs: wait for it, or Stop to keep what it learned (not "press Train")
    panel.params.steps = 5000
    assert panel.start_training() is not None
    panel.reconstruct_layers(["xz"])
    assert "the first one comes when training ends (or press Stop" in panel.status_label.text()
    panel.stop_training()
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    panel.runtime.model = None
    # interpolation-only methods need no model
    panel.params.method = "cubic"
    assert not panel.train.train_button.isEnabled()
    panel.reconstruct_layers(["xz"])
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "data, kwargs, words",
    [
        (np.zeros((64, 64), np.uint8), {}, "2D"),
        (np.zeros((64, 64, 3), np.uint8), {"rgb": True}, "RGB"),
        # the panel's own words: it has no channel picker (the library's message named channel= and --channel)
        (np.zeros((2, 9, 32, 32), np.uint8), {}, "has 4 axes (shape (2, 9, 32, 32)); the panel works on 3D stacks: "
                                                 "split it into 3D layers (right-click the layer > Split Stack)"),
    ],
)
def test_bad_layer_gives_clear_message(panel, qtbot, data, kwargs, words):
    layer = panel.viewer.add_image(data, name="bad", **kwargs)
    panel.input.set_layer(layer)
    assert panel.input.current_layer() is layer
    assert words.lower() in panel.status_label.text().lower()
    before = len(_notifications())
    assert panel.start_training() is None
    assert not panel.status.busy
    messages = _notifications()[before:]
    assert any(words.lower() in m.lower() for m in messages), messages
    assert panel.train.train_button.isEnabled()


def test_a_layer_with_a_single_time_point_is_a_3d_stack(panel):
    one = panel.viewer.add_image(np.zeros((1, 9, 32, 32), np.uint8), name="t1", scale=(1.0, 40.0, 10.0, 10.0))
    panel.input.set_layer(one)
    assert panel.current_volume().shape == (9, 32, 32)  # (1, Z, Y, X) from a tczyx store: as it always was


def test_save_and_load_model(panel, qtbot, tmp_path):
    from napari_emsr.model import EMSRModel

    _train(panel, qtbot)
    path = tmp_path / "model.pt"
    worker = panel.save_model(str(path))
    _wait_idle(panel, qtbot, worker)
    assert path.exists()
    assert EMSRModel.load(path).step == panel.model.step
    trained = panel.model
    panel.model = None
    worker = panel.load_model(str(path))
    _wait_idle(panel, qtbot, worker)
    assert panel.model is not None and panel.model.step == trained.step
    assert "step 6" in panel.models.info_label.text() and "step 6" in panel.models.title()


def test_a_model_of_another_bit_depth_is_applied_in_the_layers_own_range(panel, qtbot, tmp_path):
    from napari_emsr.io import as_volume
    from napari_emsr.train import TrainConfig, train

    source = panel.current_layer()
    data = np.asarray(source.data)
    wide = as_volume(data.astype(np.uint16) * 100, spacing=(40.0, 10.0, 10.0))  # the same tissue, 16-bit x 100
    path = tmp_path / "m16.emsr.pt"
    train(wide, TrainConfig(factor=4, steps=3, net="rescnn", size="tiny", patch=32, batch=2, device="cpu",
                            val_every=3, preview_every=0)).save(path)
    qtbot.waitUntil(lambda: panel.anisotropy is not None, timeout=TIMEOUT)  # the layer's range is read there
    before = len(_notifications())
    _wait_idle(panel, qtbot, panel.load_model(str(path)))
    panel.params.method = "isotropic"
    panel.reconstruct_params.planes = ("xz",)
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)
    said = _notifications()[before:]
    assert any("lie far from the ones the model was trained on" in m for m in said), said
    xz = panel.reconstructed_layers[0]
    y = data.shape[1] // 2
    plane = np.asarray(xz.data.dask[:, y].compute(), np.float32)  # a restored xz plane, in the layer's range
    assert abs(plane.mean() - data[:, y].mean()) < 10 and plane.max() <= data.max() + 30
    # asked again (the estimates, the export): the same scaled model, said once
    assert panel.model_or_method() is panel.model_or_method()
    assert len([m for m in _notifications()[before:] if "lie far" in m]) == 1


def test_load_bad_model_file_notifies(panel, qtbot, tmp_path):
    path = tmp_path / "not_a_model.pt"
    path.write_bytes(b"this is not a model")
    before = len(_notifications())
    worker = panel.load_model(str(path))
    _wait_idle(panel, qtbot, worker)
    assert panel.model is None
    assert len(_notifications()) > before
    assert panel.status_label.text()


def test_export_and_cancel(panel, qtbot, tmp_path):
    from qtpy.QtCore import Qt

    from napari_emsr.io import open_volume

    panel.params.method = "cubic"
    out = tmp_path / "iso.ome.zarr"
    panel.reconstruct_params.export_planes = "xz"
    worker = panel.export_volume(str(out))
    assert panel.export_status.busy and not panel.export.export_button.isEnabled()
    _wait_idle(panel, qtbot, worker)
    assert panel.export.export_button.isEnabled()
    vol = open_volume(out)
    np.testing.assert_allclose(vol.spacing, (10, 10, 10))
    assert vol.shape[1:] == panel.viewer.layers["medulla anisotropic"].data.shape[1:]
    assert panel.export.progress_bar.value() == panel.export.progress_bar.maximum()
    assert panel.export_status.done == panel.export_status.total > 0
    assert panel.export_status.message.startswith(f"Exported to {out} in ")

    # Cancel from the worker thread at the first block, so the cancel lands before the end.
    tif = tmp_path / "iso.tif"
    panel.export_progress.connect(
        lambda done, total: panel.export_job.cancel(), Qt.ConnectionType.DirectConnection
    )
    worker = panel.export_volume(str(tif), planes="xz")
    _wait_idle(panel, qtbot, worker)
    assert not tif.exists(), "a cancelled export must not look finished"
    assert "cancelled" in panel.status_label.text()
    assert panel.export.export_button.isEnabled()


# ------------------------------------------------------------------------------ a method the panel never heard of
def _toy_rows_pairs(ctx):
    """A pair-maker of a few lines: the target is a lateral patch, the input loses every other row."""
    import torch

    lost = ctx.options["toy_rows"]

    def degrade(y):
        x = y.copy()
        if lost == "odd":
            x[:, 1::2] = x[:, :-1:2]
        else:
            x[:, 2::2] = x[:, 1:-1:2]
        return x

    class Pairs:
        info = {"toy_rows": lost}

        def batch(self, n):
            y = ctx.lateral_patches(n)
            return tuple(torch.from_numpy(a[:, None].copy()).to(ctx.device) for a in (degrade(y), y))

        def validation(self):
            y = ctx.lateral_patches(4, ctx.held_out_planes(), np.random.default_rng(0))
            return degrade(y), y

    return Pairs()


class _ToyWarmup:
    """A toy earlier stage: counts its steps."""

    def __init__(self, ctx):
        self.n = 0

    def step(self):
        self.n += 1
        return {"loss": 1.0 / self.n}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        self.n = 0


def _toy_method():
    from napari_emsr.methods import Method, Option, Stage

    return Method(
        name="toy-rows",
        description="a test method: restore the rows lost between kept ones",
        pairs=_toy_rows_pairs,
        net="rescnn",
        size="tiny",
        loss="l1",
        order=1,
        defaults={"steps": 4, "patch": 32, "batch": 2},
        options=(
            Option("toy_rows", "odd", choices=("odd", "even"), label="Lost rows", help="which rows the input loses",
                   descriptions={"odd": "rows 1, 3, 5 ...", "even": "rows 2, 4, 6 ..."}),
        ),
        stages=(Stage("warmup", 2, _ToyWarmup),),
    )


def test_a_registered_toy_method_trains_and_reconstructs_in_the_panel(panel, qtbot):
    from napari_emsr.methods import method_names, register_method, unregister_method

    toy = register_method(_toy_method())
    try:
        combo = panel.method.method_combo
        combo.showPopup()  # the picker reads the registry when it opens
        combo.hidePopup()
        combo.setCurrentIndex(combo.findData(toy.name))
        assert panel.params.method == toy.name
        assert (panel.params.steps, panel.params.patch, panel.params.size) == (4, 32, "tiny")
        assert list(panel.method.option_combos) == ["toy_rows"]
        assert panel.params.options == {"toy_rows": "odd"}
        option = panel.method.option_combos["toy_rows"]
        option.setCurrentIndex(option.findData("even"))
        assert panel.params.options == {"toy_rows": "even"}

        stages, messages = [], []
        panel.status.events.stage.connect(stages.append)
        panel.status.events.message.connect(messages.append)
        bars = []
        panel.status.events.step.connect(lambda _: bars.append(panel.train.progress_bar.format()))
        _train(panel, qtbot)
        assert stages == ["warmup", "restore"]
        assert any(m.startswith("warmup (1/2): 1/2 steps") for m in messages), messages
        assert any(t.startswith("stage warmup 2/2 steps") for t in bars), bars
        assert any(t.startswith("restore 4/4 steps") for t in bars), bars
        assert panel.plot.steps == [1, 2, 3, 4]  # the restoring network's curve, after the warm-up's
        assert panel.model is not None and panel.model.step == 4
        assert panel.model.config["method"] == toy.name and panel.model.config["options"] == {"toy_rows": "even"}

        panel.reconstruct_params.planes = ("xz",)
        panel.reconstruct_layers()
        qtbot.waitUntil(lambda: len(panel.reconstructed_layers) == 1, timeout=TIMEOUT)
        layer = panel.reconstructed_layers[0]
        source = panel.viewer.layers["medulla anisotropic"]
        plane = np.asarray(layer.data[:, layer.data.shape[1] // 2, :])
        assert plane.dtype == source.data.dtype and plane.shape == (layer.data.shape[0], source.data.shape[2])
    finally:
        unregister_method(toy.name)
    assert toy.name not in method_names()
    panel.method.refresh_methods()  # the method is gone: the panel falls back to the first one
    assert panel.params.method == method_names()[0]


# ------------------------------------------------------------------------------------------------ the first minute
def test_first_minute_tooltips_shortcuts_and_axis_labels(panel, qtbot):
    viewer = panel.viewer
    # every button says what it will do with the current choices
    panel.params.budget, panel.params.minutes = "minutes", 7
    assert "'medulla anisotropic' for 7 minutes" in panel.train.train_button.toolTip()
    assert "Ctrl+Shift+Return" in panel.train.train_button.toolTip()
    assert "Ctrl+Shift+X" in panel.train.stop_button.toolTip()
    panel.reconstruct_params.planes = ("xz", "fuse")
    assert "xz-restored, fused layers of 'medulla anisotropic'" in panel.reconstruct.button.toolTip()
    for button in (panel.train.resume_button, panel.models.save_button, panel.models.load_button,
                   panel.export.export_button, panel.export.cancel_button, panel.compare.side_button,
                   panel.compare.flip_button):
        assert len(button.toolTip()) > 20, button.text()
    # keyboard shortcuts of the panel (tried with a key press in test_panel_fits_a_1600_by_1150_window)
    assert panel.shortcuts["train"].key().toString() == "Ctrl+Shift+Return"
    assert panel.shortcuts["stop"].key().toString() == "Ctrl+Shift+X"
    # a stack opened without axis labels gets z, y, x once picked: the rolled axis reads y, not "-2"
    bare = viewer.add_image(np.zeros((8, 32, 32), np.uint8), name="bare", scale=(40, 10, 10))
    assert bare.axis_labels == ("-3", "-2", "-1")
    panel.input.set_layer(bare)
    assert bare.axis_labels == ("z", "y", "x")
    viewer.dims.order = (1, 0, 2)
    assert viewer.dims.axis_labels[viewer.dims.order[0]] == "y"


def test_panel_fits_a_1600_by_1150_window(make_napari_viewer, qtbot):
    from napari_emsr.plugin._widget import EMSRWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-emsr", "medulla_anisotropic")
    panel = EMSRWidget(viewer)
    panel.ask = lambda question: True  # a long training is asked about in a modal box
    viewer.window.add_dock_widget(panel, name="napari-emsr", area="right")
    window = viewer.window._qt_window
    window.resize(1600, 1150)
    qtbot.wait(300)
    assert window.height() <= 1150
    # the status line is always in sight, under the sections
    assert panel.status_label.isVisible() and panel.status_label.text()
    bottom = panel.status_label.mapTo(window, panel.status_label.rect().bottomLeft()).y()
    assert bottom <= window.height()
    # and every section fits without scrolling, the quality readout and a model's title included
    panel.models.set_info("isotropic / rescnn (small), F = 4, axis 0, step 3000")
    panel.reconstruct.show_quality(
        "Quality (no ground truth): anisotropy input 2.20 → cubic 1.90 → restored 1.31; banding cubic 0.90, "
        "restored 0.62: the result BANDS (1 is ideal for both)"
    )
    # with the recommended budget and the estimates shown (their longest usual texts)
    panel.budget_hint.setText('Recommended: 60 min ≈ 19000 steps here (5.3 steps/s) · <a href="use">use it</a>')
    panel.budget_hint.setVisible(True)
    panel.reconstruct.show_estimate("here: xz plane 0.25 s · yz plane 0.31 s · fused block (64) 35 s")
    panel.export.show_estimate("≈ 1:02:30 here, 130 blocks")
    panel.set_status(  # a status line of three lines (the longest the panel writes)
        "Side by side: medulla anisotropic | cubic | medulla anisotropic xz-restored, same xz plane and zoom; page "
        "through y with the slider. Flip cubic / restored compares them in one view."
    )
    qtbot.wait(100)
    assert panel.scroll.verticalScrollBar().maximum() == 0, panel.scroll.widget().sizeHint()
    # fields show their whole value (the z voxel size read "50.00(")
    panel.input_params.spacing = (50.0, 10.0, 10.0)
    qtbot.wait(50)
    for box in (*panel.input.spacing_boxes, panel.input.factor_box):
        edit = box.lineEdit()
        assert box.isVisible() and edit.fontMetrics().horizontalAdvance(edit.text()) <= edit.width(), edit.text()
    # the keyboard shortcuts start and stop training
    from qtpy.QtCore import Qt

    params = panel.params
    params.device, params.steps, params.patch, params.size = "cpu", 5000, 32, "tiny"
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    # NOTE: through the QWindow, as a real key press comes; napari's canvas has the focus and takes the keys.
    qtbot.keyClick(window.windowHandle(), Qt.Key.Key_Return, modifiers)
    assert panel.status.busy
    qtbot.waitUntil(lambda: panel.status.step >= 2, timeout=TIMEOUT)
    qtbot.keyClick(window.windowHandle(), Qt.Key.Key_X, modifiers)
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert panel.model is not None and panel.model.step < 5000
    # the same keys while a field of the panel has the focus
    panel.input.factor_box.setFocus()
    qtbot.waitUntil(panel.input.factor_box.hasFocus, timeout=5000)
    qtbot.keyClick(window.windowHandle(), Qt.Key.Key_Return, modifiers)
    assert panel.status.busy
    qtbot.waitUntil(lambda: panel.status.step >= 2, timeout=TIMEOUT)
    qtbot.keyClick(window.windowHandle(), Qt.Key.Key_X, modifiers)
    qtbot.waitUntil(lambda: not panel.status.busy, timeout=TIMEOUT)
    assert panel.model.step < 5000
    panel.cleanup()
    qtbot.waitUntil(lambda: not panel.workers, timeout=TIMEOUT)


def test_quality_without_ground_truth_after_reconstruct(panel, qtbot):
    from napari_emsr.metrics import anisotropy, section_banding
    from napari_emsr.plugin.workers.tasks import BANDING_WARNING

    _train(panel, qtbot)
    panel.reconstruct_params.planes = ("xz",)
    before = len(_notifications())
    panel.reconstruct_layers()
    qtbot.waitUntil(lambda: panel.quality is not None, timeout=TIMEOUT)
    quality = panel.quality
    xz = panel.reconstructed_layers[0]
    crop = np.asarray(xz.data.dask[:, quality["start"] : quality["stop"], :])
    assert quality["stop"] - quality["start"] == 32 and quality["axis"] == 1
    assert quality["restored"]["banding"] == pytest.approx(section_banding(crop, 4.0)["ratio"])
    assert quality["restored"]["anisotropy"] == pytest.approx(anisotropy(crop, spacing=(1, 1, 1))["ratio"])
    assert quality["input"]["anisotropy"] == pytest.approx(panel.anisotropy["ratio"])
    # the input is anisotropic (F = 4): its measure is well above the interpolated volume's
    assert quality["input"]["anisotropy"] > quality["cubic"]["anisotropy"]
    text = panel.reconstruct.quality_label.text()
    assert panel.reconstruct.quality_label.isVisibleTo(panel) and "anisotropy input" in text and "banding cubic" in text
    bands = quality["restored"]["banding"] < BANDING_WARNING
    assert ("BANDS" in text) == bands
    assert any("result bands" in m for m in _notifications()[before:]) == bands
    # deband's decision, with the network's own banding on the probe: the line says which and why
    from napari_emsr.deband import BANDED, fit, probe_region
    from napari_emsr.reconstruct import reconstruct

    raw = np.asarray(reconstruct(panel.current_volume(), panel.model, planes="xz", device="cpu", deband=False))
    y0, y1, x0, x1 = probe_region(raw.shape[1:])
    own = fit(raw[:, y0:y1, x0:x1].astype(np.float32), 4.0, (2,))
    assert quality["deband"]["banding"] == pytest.approx(own.banding, abs=0.01)  # the probe is the float output
    assert quality["deband"]["active"] == (own.banding < BANDED)
    assert f"Deband: {'the' if quality['deband']['active'] else 'not needed, the'} network's output banded" in text
