"""How long things take here: the training and restoring speeds of this device, the recommended budget, and the
estimates shown by Reconstruct and Export (:mod:`napari_emsr.plugin.estimate` measures the speeds; the export's
estimate comes from a timed chunk of the export's own pipeline, :func:`napari_emsr.estimates.estimate_export`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin import estimate
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.state import PLANE_LABELS, clock

logger = logging.getLogger(__name__)

#: A layer's first block (it builds the network's buffers) times its pipeline only when it took this long (s).
WARMED_UP_SECONDS = 5.0
#: A block of at least this many planes times an export of its pipeline (fewer: a call's fixed costs dominate).
MIN_TIMED_PLANES = 8


def duration(seconds: float) -> str:
    """``0.4 s`` below a minute, else ``m:ss``."""
    return f"{seconds:.2g} s" if seconds < 60 else clock(seconds)


def method_of(name: str) -> Any:
    """The registered method called ``name``."""
    from napari_emsr.methods import get_method

    return get_method(name)


def link_colour(viewer: Any) -> str:
    """The current napari theme's highlight colour (links drawn in it read on dark and light themes)."""
    from napari.utils.theme import get_theme

    return get_theme(viewer.theme).highlight.as_hex()


class EstimatesController:
    """Measures the speeds in workers when the choices settle, and shows what they mean.

    Parameters
    ----------
    host : Host
        The panel.
    budget_hint : QLabel
        The "Recommended: ... · use it" line under the budget field.
    reconstruct, export : ReconstructWidget, ExportWidget
        Their estimate lines.
    busy : callable
        True while a measure now would compete with other work (training, an anisotropy measure).
    """

    def __init__(self, host: Host, budget_hint: Any, reconstruct: Any, export: Any, busy: Callable[[], bool]):
        self.host = host
        self.budget_hint = budget_hint
        self.reconstruct = reconstruct
        self.export = export
        self.busy = busy
        self.restore_key: tuple | None = None
        self.train_key: tuple | None = None
        self.requests = {"restore": 0, "train": 0, "export": 0}
        #: The export's estimate from a timed chunk of its pipeline, and what it was timed for (:meth:`export_key`).
        self.timed_export: tuple[tuple, Any] | None = None
        self.export_key_timed: tuple | None = None
        #: Per pipeline ("xz", "yz", "fuse"): (output voxels per second, planes in the block) of the last block of
        #: that pipeline restored here (forgotten when the model, device or stack changes).
        self.learned: dict[str, tuple[estimate.Speed, int]] = {}
        self.stopped = False
        self._hint = ""
        # NOTE: measured after the user stops changing things (each measure costs a few seconds of CPU).
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(400)
        self.timer.timeout.connect(self.measure_speeds)
        budget_hint.linkActivated.connect(lambda _: self.use_recommended_budget())
        host.viewer.events.theme.connect(lambda *_: self._show_hint(self._hint))
        rp = host.reconstruct_params
        for event in (rp.events.export_planes, rp.events.deband):
            event.connect(self.schedule)  # another pipeline to time

    @property
    def runtime(self) -> Any:
        return self.host.runtime

    def schedule(self, *_: Any) -> None:
        """Measure again once the choices settle."""
        if not self.stopped:
            self.timer.start()

    def measure_speeds(self) -> None:
        """Measure, in workers, how fast this device trains and restores with the current choices."""
        host = self.host
        if self.stopped:
            return
        if not host.flow.measures_speed:  # NOTE: the probes time isotropic training and restoration only
            self.clear()
            return
        if self.busy():
            # NOTE: timed alone, or the speed measured is the two tasks' share; measured again afterwards
            self.timer.start()
            return
        self.measure_training_speed()
        if self.measure_restore_speed() is None:
            self.measure_export()  # else once the restoring speed is measured (timed alone, not beside it)

    def stop(self) -> None:
        """Measure nothing more (the panel closes)."""
        self.stopped = True
        self.timer.stop()

    def clear(self) -> None:
        """No estimate to show (the paired flow)."""
        self.budget_hint.setVisible(False)
        self.reconstruct.show_estimate("")
        self.export.show_estimate("")

    # ------------------------------------------------------------------------------------ training speed
    def _show_hint(self, text: str) -> None:
        """The hint line; ``{link}`` becomes the "use it" link, in the theme's highlight colour."""
        self._hint = text
        if "{link}" in text:
            colour = link_colour(self.host.viewer)
            text = text.replace("{link}", f'<a href="use" style="color: {colour};">use it</a>')
        self.budget_hint.setText(text)
        self.budget_hint.setVisible(bool(text))

    def measure_training_speed(self) -> Any:
        """Time a few training steps of the current method, network, patch and device on the picked layer."""
        host = self.host
        try:
            if host.interpolation_only():
                raise InputError("no training")
            volume = host.current_volume()
            config = host.params.to_config(host.input_params.factor)
        except EMSRError:
            self.budget_hint.setVisible(False)
            return None
        key = self.training_key()
        if key == self.train_key:
            return None
        self.train_key = key
        self.requests["train"] += 1
        request = self.requests["train"]
        self._show_hint("Recommended here: measuring this device's training speed...")
        return host.start(
            estimate.measure_training_speed, volume, config,
            connect={"returned": partial(self.on_train_speed, request),
                     "errored": partial(self._on_speed_error, "train", request)},
        )

    def on_train_speed(self, request: int, speed: estimate.Speed) -> None:
        if request != self.requests["train"]:
            return
        params = self.host.params
        self.runtime.train_speed = speed
        default = int(method_of(params.method).training_defaults().get("steps") or params.steps)
        kind, value, text, rule = estimate.recommend_budget(speed, default)
        self.runtime.recommended = (kind, value)
        self._show_hint(f"Recommended: {text} · {{link}}")
        self.budget_hint.setToolTip(f"Measured: {speed.how}: {speed.rate:.3g} steps/s. {rule}. 'use it' sets the "
                                    "budget.")

    def from_training(self, status: Any) -> None:
        """The training speed the run just measured (its last stage's steps and time) replaces the probe's."""
        if not self.host.flow.measures_speed:
            return
        steps, spent = status.step - status.stage_first_step, status.elapsed - status.stage_started
        key = self.training_key()
        if steps < 2 or spent <= 0 or key is None:
            return
        from napari_emsr.device import resolve_device

        device = resolve_device(self.host.params.device)  # torch is loaded: it just trained
        speed = estimate.Speed(steps / spent, "training", device,
                               f"the last training run on this stack: {steps} steps in {spent:.0f} s on {device}")
        self.train_key = key
        self.requests["train"] += 1  # a probe still running is out of date
        self.on_train_speed(self.requests["train"], speed)

    def training_key(self) -> tuple | None:
        """What a training speed depends on (None without a usable layer)."""
        host = self.host
        try:
            volume = host.current_volume()
        except EMSRError:
            return None
        p = host.params
        return (host.input_params.layer, tuple(volume.data.shape), p.method, p.net, p.size, p.patch, p.device,
                round(host.input_params.factor, 4))

    def training_seconds(self, config: Any) -> float | None:
        """Seconds a training of ``config`` should take here (None when the speed is not known)."""
        if config.minutes:
            return float(config.minutes) * 60.0
        speed = self.runtime.train_speed
        if speed is None or not config.steps or speed.rate <= 0:
            return None
        return float(config.steps) / float(speed.rate)

    def _on_speed_error(self, which: str, request: int, err: BaseException) -> None:
        if request != self.requests[which]:
            return
        logger.info("%s speed not measured: %s", which, err)
        if which == "train":
            self.train_key = None
            self._show_hint(f"Recommended budget not measured: {err}")
        elif which == "export":
            self.export_key_timed = None
        else:
            self.restore_key = None

    def use_recommended_budget(self) -> None:
        """Set the budget to the recommended one (the link next to the budget field)."""
        if self.runtime.recommended is None:
            return
        kind, value = self.runtime.recommended
        setattr(self.host.params, kind, int(value))
        self.host.params.budget = kind

    # ------------------------------------------------------------------------------------ restoring speed
    def measure_restore_speed(self) -> Any:
        """Time the model's network (or the interpolation) on planes of the picked stack's size, in a worker."""
        host = self.host
        try:
            volume = host.current_volume()
            model = host.model_or_method()
        except EMSRError:
            self.show()
            return None
        factor = float(model.factor) if not isinstance(model, str) else float(host.input_params.factor)
        shape = tuple(int(n) for n in volume.data.shape)
        key = (model if isinstance(model, str) else id(model), host.params.device, shape, round(factor, 4))
        if key == self.restore_key:
            return None
        self.restore_key = key
        self.learned = {}
        self.runtime.restore_speed = None
        self.requests["restore"] += 1
        request = self.requests["restore"]
        self.reconstruct.show_estimate("timing this device...")
        return host.start(
            estimate.measure_restore_speed, model, shape, factor, host.params.device, volume,
            connect={"returned": partial(self._on_restore_speed, request),
                     "errored": partial(self._on_speed_error, "restore", request)},
        )

    def _on_restore_speed(self, request: int, speed: estimate.Speed) -> None:
        if request == self.requests["restore"]:
            self.runtime.restore_speed = speed
            self.show()
            self.measure_export()

    # ------------------------------------------------------------------------------------ export estimate
    def export_key(self) -> tuple | None:
        """What the export's timed estimate depends on (None without a usable layer and model)."""
        host = self.host
        try:
            volume = host.current_volume()
            model = host.model_or_method()
        except EMSRError:
            return None
        rp = host.reconstruct_params
        factor = None if not isinstance(model, str) else round(float(host.input_params.factor), 4)
        return (host.input_params.layer, model if isinstance(model, str) else id(model), host.params.device,
                tuple(int(n) for n in volume.data.shape), factor, rp.export_planes, bool(rp.deband))

    def measure_export(self) -> Any:
        """Time one chunk of the export's own pipeline (its planes, deband setting and chunks) in a worker: the
        export's estimate (:func:`napari_emsr.estimates.estimate_export`)."""
        host = self.host
        key = self.export_key()
        if key is None or key == self.export_key_timed or self.stopped:
            return None
        if self.busy():
            self.timer.start()
            return None
        volume, model = host.current_volume(), host.model_or_method()
        rp = host.reconstruct_params
        factor = float(host.input_params.factor) if isinstance(model, str) else None
        self.export_key_timed = key
        self.requests["export"] += 1
        request = self.requests["export"]
        task = partial(estimate.estimate_export, volume, model, planes=rp.export_planes, factor=factor,
                       device=host.params.device, deband=bool(rp.deband))
        return host.start(task, connect={"returned": partial(self._on_timed_export, request, key),
                                         "errored": partial(self._on_speed_error, "export", request)})

    def _on_timed_export(self, request: int, key: tuple, found: Any) -> None:
        if request == self.requests["export"]:
            self.timed_export = (key, found)
            self.show()

    def factor(self) -> float:
        """F of the model applied (or of the input, for interpolation)."""
        model = self.runtime.model
        if model is not None and not self.host.interpolation_only():
            return float(model.factor)
        return float(self.host.input_params.factor)

    def kind(self) -> str:
        speed = self.runtime.restore_speed
        return speed.kind if speed is not None else "network"

    def estimates(self) -> dict:
        """Seconds Reconstruct's blocks and Export should take here (empty before the speed is measured).

        A pipeline (xz, yz or fused) restored here is timed by its own blocks (output voxels per second); the
        others, and an export from blocks of a few planes, come from the probe's network speed and the work
        they count (:mod:`napari_emsr.plugin.estimate`).

        Returns
        -------
        dict
            ``{"blocks": {planes: (seconds, planes per block)}, "export": (seconds, blocks), "how": str,
            "export_how": str, "timed": set of the pipelines timed by their own blocks}``.
        """
        host = self.host
        speed = self.runtime.restore_speed
        if speed is None or host.current_layer() is None:
            return {}
        try:
            volume = host.current_volume()
        except EMSRError:
            return {}
        shape = tuple(int(n) for n in volume.data.shape)
        nz, ny, nx = shape
        factor = self.factor()
        zo = estimate.output_depth(nz, factor)
        kind = self.kind()
        blocks = {}
        lazy_chunks = {"xz": (1, min(nx, 1024)), "yz": (min(ny, 1024), 1), "fuse": (min(ny, 64), min(nx, 1024))}
        for planes, (cy, cx) in lazy_chunks.items():
            learned = self.learned.get(planes)
            if learned is not None:
                seconds = learned[0].seconds(zo * cy * cx)
            elif kind == "network":
                seconds = speed.seconds(estimate.chunk_work(zo, ny, nx, planes, (0, cy), (0, cx)))
            else:
                seconds = speed.seconds(zo * cy * cx)
            blocks[planes] = (seconds, cy if planes != "yz" else cx)
        export_planes = host.reconstruct_params.export_planes
        chunks = estimate.export_chunks(volume, export_planes)
        work, count = estimate.volume_work(shape, factor, export_planes, chunks, kind)
        how = (f"{speed.how}: {speed.rate / 1e6:.3g} M {'px' if kind == 'network' else 'voxels'}/s; the work "
               "counted is what the network restores (each chunk's planes with their margins), not reading, "
               "interpolating or writing")
        seconds, export_how = speed.seconds(work), how + " (a chunk of the export is being timed)"
        learned = self.learned.get(export_planes)
        timed = self.timed_export
        if timed is not None and timed[0] == self.export_key():
            # NOTE: a chunk of the export's own pipeline, timed here, knows what the network's speed does not:
            # reading, interpolating, the chunks' margins, the deband probe and filters
            seconds, count, export_how = timed[1].seconds, timed[1].chunks, timed[1].how
        elif learned is not None and learned[1] >= MIN_TIMED_PLANES:
            # NOTE: only a block of many planes says how fast an export's chunks go: a one-plane block pays a whole
            # call's fixed costs for a few voxels (and another direction's speed says nothing of this pipeline's).
            seconds = learned[0].seconds(zo * ny * nx)
            export_how = f"{learned[0].how}: {learned[0].rate / 1e6:.3g} M output voxels/s"
        return {"blocks": blocks, "export": (seconds, count), "how": how, "export_how": export_how,
                "timed": set(self.learned), "export_timed": timed is not None and timed[0] == self.export_key()}

    def show(self, *_: Any) -> None:
        """The Reconstruct box and the Export box say how long things take here."""
        if self.stopped:
            return
        host = self.host
        found = self.estimates()
        if not found:
            if self.runtime.restore_speed is None and self.restore_key is None:
                self.reconstruct.show_estimate("")
                self.export.show_estimate("")
            return
        rp = host.reconstruct_params
        blocks, timed = found["blocks"], found["timed"]
        parts = []
        shown = list(rp.planes or ("xz",))
        shown += [planes for planes in ("xz", "yz", "fuse") if planes in timed and planes not in shown]
        for planes in shown:
            seconds, n = blocks[planes]
            what = {"xz": "xz plane", "yz": "yz plane"}.get(planes, f"fused block ({n})")
            parts.append(f"{what} {duration(seconds)}{' (timed)' if planes in timed else ''}")
        fused = "fuse" in rp.planes and not host.interpolation_only()
        tip = (f"Each new plane or block is restored in the background as you view it"
               f"{' (a fused block with its uncertainty)' if fused else ''}. Estimated from {found['how']}.")
        for planes in shown:
            if planes in timed:
                tip += f" {PLANE_LABELS[planes]} (timed): {self.learned[planes][0].how}."
        self.reconstruct.show_estimate("here: " + " · ".join(parts), tip)
        seconds, count = found["export"]
        where = rp.scheduler.strip()
        text = f"≈ {clock(seconds)} here, {count} block{'s' if count != 1 else ''}"
        tip = f"Export of {PLANE_LABELS[rp.export_planes]}: estimated from {found['export_how']}."
        if where:
            tip += f" On {where}, the time left comes from the blocks as they arrive."
        self.export.show_estimate(text, tip)

    def learn_speed(self, planes: Any, note: Any) -> None:
        """A block restored here times its own pipeline (xz, yz or fused) better than the probe: the estimates
        of that pipeline follow it, in output voxels per second (the comparison's cubic layer says nothing of the
        network)."""
        speed = self.runtime.restore_speed
        if speed is None or speed.kind != "network" or planes.on_view is None:
            return
        # NOTE: a layer's first block also builds the network's buffers for its shape (a one-plane block can take
        # many times what the next one takes): it times its pipeline only when that cost is small beside it.
        first = len(planes.seconds) < 2
        if note.seconds < (WARMED_UP_SECONDS if first else 0.01):
            return
        pipeline = "fuse" if planes.planes in ("fuse", "uncertainty") else planes.planes
        voxels = estimate.block_work(planes, note.block, self.factor(), "voxels")
        first, last = planes.block_span(note.block)
        count = last - first + 1
        what = {"xz": "xz", "yz": "yz", "fuse": "fused"}.get(pipeline, pipeline)
        self.learned = {**self.learned, pipeline: (estimate.Speed(
            voxels / note.seconds, "voxels", speed.device,
            f"the last {what} block restored here ({count} plane{'s' if count != 1 else ''}, {voxels / 1e6:.3g} M "
            f"voxels in {note.seconds:.1f} s)",
        ), count)}
        self.show()

    def block_seconds(self, planes: Any, block: tuple[int, ...]) -> float | None:
        """Seconds a block should take: as long as this layer's blocks took so far, else from the speed."""
        measured = [t for data in (planes, *planes.partners) for t in data.seconds]
        if measured:
            return float(np.mean(measured[-3:]))
        learned = self.learned.get("fuse" if planes.planes in ("fuse", "uncertainty") else planes.planes)
        if learned is not None:
            return learned[0].seconds(estimate.block_work(planes, block, self.factor(), "voxels"))
        speed = self.runtime.restore_speed
        if speed is None:
            return None
        return speed.seconds(estimate.block_work(planes, block, self.factor(), self.kind()))
