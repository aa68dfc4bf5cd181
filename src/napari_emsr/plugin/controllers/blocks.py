"""The restored layers and their block pump: a layer asks for the blocks napari slices, one worker restores them
in the background, and the panel says what each layer shows (restored, interpolated, computing)."""

from __future__ import annotations

import time
import weakref
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal

from napari_emsr.plugin.controllers.estimates import duration
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.lazy_layer import COMPUTING, INTERPOLATED, NOTHING, RESTORED, RestoredPlanes
from napari_emsr.plugin.state import clock
from napari_emsr.plugin.workers.block_worker import BlockNote, BlockQueue, block_task


class _Signals(QObject):
    #: A restored layer asked for blocks (emitted from whichever thread napari sliced in; queued).
    blocks_wanted = Signal()
    #: A restored layer's data and what it now shows (a view of :mod:`napari_emsr.plugin.lazy_layer`; queued).
    layer_view_changed = Signal(object, str)


def _weak_emitters(signals: _Signals) -> tuple:
    """``on_wanted`` and ``on_view`` callbacks of a restored layer's data, holding the signals weakly (the layer
    may outlive a closed panel); they emit queued signals from whichever thread napari slices in."""
    ref = weakref.ref(signals)

    def on_wanted(_planes: Any) -> None:
        alive = ref()
        if alive is not None and not getattr(alive, "closed", False):
            alive.blocks_wanted.emit()

    def on_view(planes: Any, view: str) -> None:
        alive = ref()
        if alive is not None and not getattr(alive, "closed", False):
            alive.layer_view_changed.emit(planes, view)

    return on_wanted, on_view


class BlockPump:
    """Adds restored layers and restores the blocks they ask for, one worker at a time.

    Parameters
    ----------
    host : Host
        The panel.
    estimates : EstimatesController
        How long a block should take; it learns the speed from each block.
    """

    def __init__(self, host: Host, estimates: Any):
        self.host = host
        self.estimates = estimates
        self.queue = BlockQueue()
        self.worker: Any = None
        self.running: dict | None = None
        self.hidden_in_3d: list = []
        self.told_views: set = set()
        self.status_before = ""
        self.signals = _Signals()
        self.signals.closed = False
        self.signals.blocks_wanted.connect(self.pump, Qt.ConnectionType.QueuedConnection)
        self.signals.layer_view_changed.connect(self.on_layer_view, Qt.ConnectionType.QueuedConnection)
        self.clock = QTimer()
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._tick)
        viewer = host.viewer
        viewer.layers.events.removed.connect(self.on_layer_removed)
        # NOTE: first, so that the restored layers are hidden before napari slices the layers for 3D.
        viewer.dims.events.ndisplay.connect(self.on_ndisplay, position="first")
        viewer.dims.events.order.connect(self.on_order)
        #: Restored layers the panel hid because the view is not theirs (yz-restored in the xz view ...).
        self.view_hidden: list = []

    # ------------------------------------------------------------------------------------ layers
    def add(self, name: str, data: RestoredPlanes, kwargs: dict, tell: bool = True) -> Any:
        """Add a layer of ``data`` (or give it to the restored layer of that name); ``tell``: say what it shows."""
        on_wanted, on_view = _weak_emitters(self.signals)
        data.on_wanted, data.on_view = on_wanted, on_view if tell else None
        self.queue.add(data)
        return self._replace_data(name, data, kwargs) or self.host.viewer.add_image(data, **kwargs)

    def _replace_data(self, name: str, data: RestoredPlanes, kwargs: dict) -> Any:
        """Give an existing restored layer of that name its new data (a Reconstruct again); None when there is none.

        Replacing the data keeps the user's display settings and is much quicker than removing and adding a
        layer (napari collects garbage on removal: most of a second here).
        """
        viewer = self.host.viewer
        existing = viewer.layers[name] if name in viewer.layers else None
        old = getattr(existing, "data", None)
        if not isinstance(old, RestoredPlanes):
            if existing is not None:
                viewer.layers.remove(existing)
            return None
        self.queue.discard(old)
        existing.visible = False
        existing.metadata = kwargs["metadata"]
        existing.scale, existing.translate = kwargs["scale"], kwargs["translate"]
        existing.data = data
        return existing

    def hide_for_view(self, layer: Any) -> None:
        """``layer`` is hidden because it is not restored in the current view: shown when the view becomes its."""
        if layer not in self.view_hidden:
            self.view_hidden.append(layer)

    def on_order(self, event: Any = None) -> None:
        """The axes rolled: show the restored layers restored in the new view that the panel hid for the old one,
        and hide the others (they would show only interpolation); they swap back with the view."""
        viewer = self.host.viewer
        if self.signals.closed or viewer.dims.ndisplay != 2 or viewer.dims.ndim != 3:
            return
        sliced = int(viewer.dims.order[0])
        # NOTE: the isotropic results (xz, yz planes) only: a paired method's xy layer is not a view's
        layers = [layer for layer in viewer.layers if isinstance(layer.data, RestoredPlanes) and layer.data.axis]
        mine = [layer for layer in layers if layer.data.axis == sliced and layer in self.view_hidden]
        if not mine:
            return
        hidden = []
        for layer in layers:
            if layer.data.axis != sliced and layer.visible:
                layer.visible = False
                self.hide_for_view(layer)
                hidden.append(layer.name)
        for layer in mine:
            self.view_hidden.remove(layer)
            layer.visible = True
        plane = ("xy", "xz", "yz")[sliced]
        self.host.set_status(
            f"{plane} view: {', '.join(layer.name for layer in mine)} shown (restored in {plane} planes)"
            + (f"; {', '.join(hidden)} hidden (they would show only interpolation here)" if hidden else "")
            + "; they swap back when the view does."
        )

    def hide_until_2d(self, layer: Any) -> None:
        """Keep ``layer`` hidden while the view is 3D; shown when it goes back to 2D."""
        self.hidden_in_3d.append(layer)

    def on_ndisplay(self, event: Any) -> None:
        """Hide the restored layers in 3D (they are restored plane by plane), show them again in 2D."""
        viewer = self.host.viewer
        if self.signals.closed:
            return
        if viewer.dims.ndisplay == 3:
            hidden = [layer for layer in viewer.layers if isinstance(layer.data, RestoredPlanes) and layer.visible]
            for layer in hidden:
                layer.visible = False
            self.hidden_in_3d = hidden
            if hidden:
                self.host.set_status(
                    f"3D view: {', '.join(layer.name for layer in hidden)} hidden (restored plane by plane, they "
                    "would show only interpolation in 3D); they come back in 2D. Export to see the result in 3D."
                )
        else:
            for layer in self.hidden_in_3d:
                if layer in viewer.layers:
                    layer.visible = True
            self.hidden_in_3d = []

    def on_layer_removed(self, event: Any) -> None:
        data = getattr(event.value, "data", None)
        if isinstance(data, RestoredPlanes):
            self.queue.discard(data)
            self.view_hidden = [layer for layer in self.view_hidden if layer is not event.value]
            if self.running is not None and self.running.get("planes") is data:
                self.running = None  # its block's time is nobody's business now: the status line is the panel's

    # ------------------------------------------------------------------------------------ the pump
    def pump(self) -> None:
        """Start the block worker when a restored layer asks for blocks and none runs."""
        if self.worker is not None or not self.queue.pending() or self.signals.closed:
            return
        self.worker = self.host.start(
            block_task, self.queue,
            connect={"yielded": self.on_note,
                     "errored": lambda err: self.host.report_error(err, what="restoring a block"),
                     "aborted": self.on_cancelled, "finished": self.on_finished},
            progress={"desc": "napari-emsr: restoring planes"},
        )

    def on_note(self, note: BlockNote) -> None:
        planes = note.planes
        if planes is None:
            return
        host = self.host
        first, last = planes.block_span(note.block)
        axis = "zyx"[planes.axis]
        pbar = getattr(self.worker, "pbar", None)
        # the cubic layer of a comparison, or a layer deleted meanwhile: nothing worth a status line
        quiet = planes.on_view is None or not any(layer.data is planes for layer in host.viewer.layers)
        # a block of the fused layer is one of its uncertainty too: "fused + uncertainty" whichever asked first
        names = [planes.label, *(p.label for p in planes.partners)]
        label = " + ".join(sorted(names, key=lambda name: name == "uncertainty"))
        if note.value is None:
            guess = self.estimates.block_seconds(planes, note.block)
            if pbar is not None:
                eta = f" (≈ {duration(guess)})" if guess is not None else ""
                pbar.set_description(f"napari-emsr: restoring {label} {axis} {first}-{last}{eta}")
            if not quiet:
                self.status_before = host.status_text()
                self.running = {"t0": time.perf_counter(), "estimate": guess, "label": label, "axis": axis,
                                "first": first, "last": last, "count": last - first + 1, "planes": planes}
                host.set_status(self.running_text())
                self.clock.start()
            return
        if planes.store(note.block, note.value):
            for layer in host.viewer.layers:
                if layer.data is planes and layer.visible:
                    layer.refresh()
        if note.partner:  # filled with the block just reported
            return
        self.running = None
        if pbar is not None:
            pbar.update(1)
        self.estimates.learn_speed(planes, note)
        if quiet:
            return
        if note.seconds >= 1.0:
            host.set_status(f"{label}: {axis} {first}-{last} restored in {note.seconds:.1f} s.")
        else:  # a quick block: the line goes back to what it said (not "restoring" this very block)
            before = self.status_before
            host.set_status(planes.describe(RESTORED) if before == planes.describe(COMPUTING) else before)

    def running_text(self) -> str:
        run = self.running or {}
        spent = time.perf_counter() - run["t0"]
        guess = run["estimate"]
        left = f", about {clock(max(0.0, guess - spent))} left" if guess is not None else ""
        more = self.queue.waiting()
        queued = f"; {more} more block{'s' if more != 1 else ''} asked for" if more else ""
        return (f"Restoring {run['label']}, {run['axis']} {run['first']}-{run['last']} ({run['count']} planes) in "
                f"the background: {clock(spent)} elapsed{left}{queued}.")

    def _tick(self) -> None:
        """Once a second while a block is restored: its elapsed and remaining time."""
        if self.running is None or self.signals.closed:
            self.clock.stop()
            return
        self.host.set_status(self.running_text())

    def on_cancelled(self, *_: Any) -> None:
        self.running = None
        self.queue.clear()
        self.host.set_status("Restoring cancelled: the layers show interpolation where no block was restored.")

    def on_finished(self) -> None:
        self.worker = None
        self.running = None
        self.pump()  # asked for while the last block was computed

    def cancel(self) -> None:
        """Stop restoring blocks after the one being computed (the activity dock's cancel does the same)."""
        self.queue.clear()
        if self.worker is not None:
            self.worker.quit()

    def on_layer_view(self, planes: RestoredPlanes, view: str) -> None:
        """Say what a restored layer shows when that changes: interpolation or nothing outside its planes."""
        from napari.utils.notifications import show_info

        if self.signals.closed:
            return
        if not any(layer.data is planes and layer.visible for layer in self.host.viewer.layers):
            return
        text = planes.describe(view)
        self.host.set_status(text)
        if view in (INTERPOLATED, NOTHING):
            told = (id(planes), view)
            if told not in self.told_views:
                self.told_views.add(told)
                show_info(f"napari-emsr: {text}")
        elif view == COMPUTING:
            self.told_views = {t for t in self.told_views if t[0] != id(planes)}

    def close(self) -> None:
        """Restore nothing more and let the viewer go (the panel closes)."""
        self.signals.closed = True
        self.clock.stop()
        self.cancel()
        viewer = self.host.viewer
        for event, slot in ((viewer.layers.events.removed, self.on_layer_removed),
                            (viewer.dims.events.ndisplay, self.on_ndisplay), (viewer.dims.events.order, self.on_order)):
            try:
                event.disconnect(slot)
            except (RuntimeError, TypeError, ValueError):
                pass
