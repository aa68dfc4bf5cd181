"""The paired flow: LR and HR layers, registration overlay, lateral Reconstruct and Export
(:class:`napari_emsr.plugin.host.Flow`).

When the method is ``paired`` the dock panel shows a "Paired LR / HR" box instead of the Input box
(:class:`napari_emsr.plugin.widgets.paired_widget.PairedWidget`) and :class:`PairedFlow` does what differs from the
isotropic flow; everything else (Train, Stop, Resume, the loss plot, the preview, Save / Load model, the
activity dock, the block worker that restores the planes you look at) is the panel's own:

- the factor s comes from the layers' pixel sizes (their lateral ``scale``), else from their shapes
  (:func:`napari_emsr.methods.paired.pair_factor`); the pair is checked by
  :func:`~napari_emsr.methods.paired.check_pair`; their messages are shown as the library words them, with the
  command line's flags named as the panel's fields;
- the registration (:func:`napari_emsr.methods.paired.registration.register`) runs in a worker once both layers
  are picked (or
  on Register) and is drawn as a rectangle on the LR layer (a Shapes layer ``"<LR> HR field"``), with its
  residual in the status line;
- Train passes the HR layer as the trainer's volume and the LR layer as the method's ``lr_image`` option
  (:func:`~napari_emsr.methods.paired.lr_source`), as ``emsr train --method paired --lr LR --hr HR`` does;
- Reconstruct adds the lazy lateral result of the LR layer (:func:`napari_emsr.methods.paired.apply.lateral`, restored
  plane by plane in the background, cubic interpolation meanwhile), ``s`` times finer (or enhanced at the same
  resolution), placed over the LR layer; Export writes it with :func:`napari_emsr.methods.paired.apply.export_lateral`.

Importing this module imports neither torch nor napari.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.controllers.tasks import TRAINING_FIRST
from napari_emsr.plugin.host import Host, Tooltips
from napari_emsr.plugin.state import PairedParameters

logger = logging.getLogger(__name__)

#: Suffix of the Shapes layer that outlines the registered HR field on the LR layer.
FIELD_SUFFIX = "HR field"
#: Seconds after the last pick before the pair is registered (picking both layers starts one registration).
REGISTER_DELAY_MS = 300
#: The command line's words in the library's messages, and the panel's.
_PANEL_WORDS = (
    ("(--factor, or the voxel sizes)", "(Factor s, or the layers' pixel sizes)"),
    ("(--factor or the voxel sizes;", "(Factor s, or the layers' pixel sizes;"),
    ("pass --factor", "type the factor in Factor s"),
    ("--lr and --hr are not swapped", "the LR and HR layers are not swapped"),
    ("the voxel sizes give", "the layers' pixel sizes give"),
)


def panel_words(err: BaseException) -> InputError:
    """The library's message, its command-line flags replaced by the panel's fields."""
    text = str(err)
    for cli, panel in _PANEL_WORDS:
        text = text.replace(cli, panel)
    return InputError(text)


def _known_lateral_scale(layer: Any) -> bool:
    """Whether a layer has a lateral pixel size (napari's default scale of 1 says nothing)."""
    return any(float(s) != 1.0 for s in layer.scale[-2:])


def layer_volume(layer: Any, with_spacing: bool = True) -> Any:
    """An image layer (2D image or 3D stack) as a :class:`napari_emsr.io.Volume` (z, y, x) for the paired method.

    A 2D image is one plane. The spacing is the layer's pixel size (z 1 for an image), in nm when its unit is a
    known length; ``with_spacing=False`` leaves it out (the factor is then read from the shapes).

    Raises
    ------
    InputError
        An RGB layer, or data that is not a greyscale image or stack.
    """
    import dataclasses

    from napari_emsr.io.units import normalise_unit
    from napari_emsr.methods.paired import as_stack
    from napari_emsr.plugin.layers import layer_spacing

    if getattr(layer, "rgb", False):
        raise InputError(f"layer {layer.name!r} is an RGB image: the paired method needs greyscale images or stacks; "
                         "convert it to greyscale first")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if getattr(data, "ndim", 0) not in (2, 3):
        raise InputError(f"layer {layer.name!r} has {data.ndim} dimensions {tuple(data.shape)}: the paired method "
                         "needs a 2D image (y, x) or a 3D stack (z, y, x)")
    vol = as_stack(data)
    if not with_spacing:
        return vol
    spacing, unit = layer_spacing(layer)
    translate = tuple(float(t) for t in layer.translate[-3:])
    if len(translate) == 2:
        translate = (0.0, *translate)
    _, to_nm = normalise_unit(unit)
    k = float(to_nm) if to_nm else 1.0
    return dataclasses.replace(vol, spacing=tuple(float(s) * k for s in spacing), unit="nm" if to_nm else unit,
                               translation=tuple(t * k for t in translate) if any(translate) else None)


class PairedFlow:
    """The paired method's part of the dock panel (see the module docstring).

    Parameters
    ----------
    host : Host
        The panel; its viewer, workers, status line, notifications and model are used.
    box : PairedWidget
        The Paired LR / HR box (it shows :attr:`params`).
    blocks : BlockPump
        Adds the restored layer.
    export : ExportController
        Runs the export.
    reconstruct_button : QPushButton
        Disabled while a Reconstruct is prepared.

    Attributes
    ----------
    params : PairedParameters
        The LR and HR layers and the factor.
    registration : napari_emsr.methods.paired.registration.Registration or None
        The last registration of the picked pair (None before one, or after the pair changed).
    """

    lateral = True
    compares = False
    measures_speed = False  # NOTE: the probes time isotropic training and restoration
    preview_text = "held-out HR plane: input | LR cubic | restored"

    def __init__(self, host: Host, params: PairedParameters, box: Any, blocks: Any, export: Any,
                 reconstruct_button: Any) -> None:
        from qtpy.QtCore import QTimer

        self.host = host
        self.params = params
        self.box = box
        self.blocks = blocks
        self.exporter = export
        self.reconstruct_button = reconstruct_button
        self.registration: Any = None
        self.overlay: Any = None
        self._request = 0
        self._deriving = False
        self._lr_key: tuple[Any, str] | None = None
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(REGISTER_DELAY_MS)
        self.timer.timeout.connect(lambda: self.register(auto=True))
        self.params.events.lr.connect(self.pair_changed)
        self.params.events.hr.connect(self.pair_changed)
        self.params.events.factor.connect(self._on_factor_changed)

    # ------------------------------------------------------------------------------------ layers
    @property
    def is_current(self) -> bool:
        """Whether this is the panel's flow now."""
        return self.host.flow is self

    def picked(self) -> None:
        """The paired method was picked: check the pair picked so far."""
        self.pair_changed()

    def tooltips(self, budget: str, device: str) -> Tooltips:
        pair = self.params
        hr = repr(pair.hr) if pair.hr else "the HR layer"
        lr = repr(pair.lr) if pair.lr else "the LR layer"
        return Tooltips(
            train=f"{hr} (with {lr} as its LR, or the recipe without one)",
            reconstruct=(f"Add a lazy layer of {lr}: its xy planes {pair.factor:g} times finer (or enhanced at the "
                         "same resolution), restored in the background as you page through z; cubic interpolation "
                         "meanwhile"),
            export=(f"Write every xy plane of {lr}, super-resolved (or enhanced), to OME-Zarr or TIFF, chunk by chunk "
                    "in the background; the pixel size is divided by s"),
        )

    def layer(self, which: str, *, required: str | None = None) -> Any:
        """The picked LR (``"lr"``) or HR (``"hr"``) layer, or None; ``required``: what it is needed for (an
        InputError that says what to pick when there is none)."""
        name = getattr(self.params, which)
        viewer = self.host.viewer
        found = viewer.layers[name] if name and name in viewer.layers else None
        if found is None and required:
            what = {"lr": "LR", "hr": "HR"}[which]
            raise InputError(f"pick the {what} layer under Paired LR / HR to {required} (open it first: File > Open)")
        return found

    def _pair_volumes(self, with_spacing: bool = True) -> tuple[Any, Any]:
        lr, hr = self.layer("lr"), self.layer("hr")
        return layer_volume(lr, with_spacing), layer_volume(hr, with_spacing)

    # ------------------------------------------------------------------------------------ factor
    def derive_factor(self) -> float | None:
        """Set the factor from the picked pair (pixel sizes, else shapes) after checking it; None without a
        pair. Raises InputError (in the panel's words) for a bad pair."""
        from napari_emsr.methods.paired import check_pair, pair_factor

        lr, hr = self.layer("lr"), self.layer("hr")
        if lr is None or hr is None:
            return None
        try:
            sized = _known_lateral_scale(lr) and _known_lateral_scale(hr)
            lv, hv = layer_volume(lr, sized), layer_volume(hr, sized)
            check_pair(lv, hv)
            factor = pair_factor(lv, hv)
        except InputError as err:
            raise panel_words(err) from None
        self._deriving = True
        try:
            self.params.factor_from = "pixel sizes" if sized else "sizes"
            self.params.factor = round(float(factor), 4)
        finally:
            self._deriving = False
        return self.params.factor

    def pair_changed(self, *_: Any) -> None:
        """A new LR or HR layer (or the paired method picked): check the pair, derive the factor, register."""
        self.registration = None
        self.box.show_registration("")
        if not self.is_current:
            return
        try:
            factor = self.derive_factor()
        except EMSRError as err:
            self.timer.stop()
            self.host.report_error(err, "checking the pair")
            return
        if factor is not None:
            lr, hr = self.params.lr, self.params.hr
            self.host.set_status(f"Pair: LR {lr!r}, HR {hr!r}, factor s = {factor:g} (from "
                                  f"{self.params.factor_from}); registering...")
            self.timer.start()

    def _on_factor_changed(self, *_: Any) -> None:
        if not self._deriving and self.is_current and self.layer("lr") is not None and self.layer("hr") is not None:
            self.registration = None
            self.timer.start()  # a typed factor: register again

    # ------------------------------------------------------------------------------------ registration
    def register(self, auto: bool = False) -> Any:
        """Register the HR layer in the LR layer in a worker and outline the HR field on the LR layer.

        Returns
        -------
        worker or None
        """
        from napari_emsr.plugin.workers.tasks import register_task

        box = self.box
        self.timer.stop()
        try:
            lr = self.layer("lr", required="register it")
            self.layer("hr", required="register it in the LR")
            lv, hv = self._pair_volumes()
        except EMSRError as err:
            if not auto:
                self.host.report_error(err, "registering")
            return None
        self._request += 1
        request = self._request
        factor = float(self.params.factor)
        box.show_registration("registering...")
        box.register_button.setEnabled(False)
        return self.host.start(
            register_task, lv, hv, factor,
            connect={"returned": partial(self._on_registered, request, lr, factor),
                     "errored": partial(self._on_register_error, request),
                     "finished": lambda: box.register_button.setEnabled(True)},
        )

    def _on_registered(self, request: int, lr: Any, factor: float, reg: Any) -> None:
        if request != self._request:
            return
        self.registration = reg
        self.box.show_registration(f"HR field at LR (y, x) = ({reg.offset[0]:.2f}, {reg.offset[1]:.2f}) "
                                                f"px, residual {reg.residual:.3f}", reg.note)
        if lr in self.host.viewer.layers:
            self.show_field(lr, reg.offset, (reg.size[0], reg.size[1]), factor, reg.as_dict())
        self.host.set_status(f"Registration: {reg.note}. The yellow rectangle on {lr.name!r} is the HR field.")

    def _on_register_error(self, request: int, err: BaseException) -> None:
        if request != self._request:
            return
        self.box.show_registration("registration failed (see the status line)")
        self.host.report_error(panel_words(err) if isinstance(err, InputError) else err, "registering")

    def show_field(self, lr: Any, offset: Any, size: Any, factor: float, info: dict | None = None) -> Any:
        """Outline the HR field (``offset`` and ``size`` in LR pixels) on the LR layer: a Shapes layer."""
        from napari_emsr.plugin.layers import hr_field_rectangle

        hr = self.layer("hr")
        if hr is not None:  # the exact size: HR pixels / s (the Registration rounds it)
            size = tuple(float(n) / factor for n in hr.data.shape[-2:])
        corners = hr_field_rectangle(lr, offset, size)
        name = f"{lr.name} {FIELD_SUFFIX}"
        viewer = self.host.viewer
        width = float(np.max(np.asarray(lr.scale[-2:], float)))
        meta = {"emsr": {"registration": dict(info or {}), "lr": lr.name, "hr": getattr(hr, "name", None)}}
        if name in viewer.layers:
            shapes = viewer.layers[name]
            shapes.data = [corners]
            shapes.shape_type = ["rectangle"]
            shapes.metadata = meta
        else:
            shapes = viewer.add_shapes([corners], shape_type="rectangle", edge_color="yellow",
                                       face_color="transparent", edge_width=width, name=name, metadata=meta,
                                       units=tuple(lr.units[-2:]))
        # NOTE: a 2D outline: napari draws it on every plane of a stack
        self.overlay = shapes
        return shapes

    # ------------------------------------------------------------------------------------ training
    def training_inputs(self) -> tuple[Any, Any]:
        """The trainer's volume (the HR layer) and :class:`napari_emsr.train.TrainConfig` (the LR layer as the
        ``lr_image`` option, the factor s), as ``emsr train --method paired --lr LR --hr HR`` builds them.

        Raises
        ------
        InputError
            No HR layer, a bad pair, or no LR layer and no factor to learn from the HR alone.
        """
        from napari_emsr.methods.paired import check_pair, lr_source, release_lr_source

        hr_layer = self.layer("hr", required="train (the HR layer is the training target)")
        lr_layer = self.layer("lr")
        hr = layer_volume(hr_layer)
        config = self.host.params.to_config(float(self.params.factor))
        options = dict(config.options)
        if lr_layer is not None:
            lr = layer_volume(lr_layer)
            try:
                check_pair(lr, hr)
            except InputError as err:
                raise panel_words(err) from None
            # NOTE: one in-memory key per LR layer data: training the same pair again (or resuming) keeps no
            # second reference (lr_source keeps what it is given for the trainer, and for a resume, to read)
            if self._lr_key is None or self._lr_key[0] is not lr_layer.data:
                if self._lr_key is not None:  # another LR layer (or new data): the old image is not kept alive
                    release_lr_source(self._lr_key[1])
                self._lr_key = (lr_layer.data, lr_source(lr))
            options["lr_image"] = self._lr_key[1]
        else:
            options["lr_image"] = ""
        import dataclasses

        return hr, dataclasses.replace(config, options=options)

    # ------------------------------------------------------------------------------------ applying
    def lateral_model(self, volume: Any = None) -> Any:
        """The panel's model, checked for lateral application (a paired model, trained on this pixel type)."""
        from napari_emsr.methods import METHODS

        model = self.host.runtime.model
        if model is None:
            if self.host.status.busy:
                raise InputError(TRAINING_FIRST)
            raise InputError("no model yet: press Train (HR and LR layers picked) or Load model... (a paired model)")
        method = model.config.get("method")
        app = getattr(METHODS.get(str(method)), "application", None)
        if app is None or not app.lateral:
            raise InputError(
                f"the current model was trained by method {method!r}: it reconstructs along z and cannot make xy "
                f"planes finer. Pick method {method} to reconstruct with it, or train (or load) a paired model"
            )
        app.check(model, volume)
        return model

    def apply_inputs(self, what: str) -> tuple[Any, Any, Any]:
        """(LR layer, its volume, the model) for Reconstruct or Export; InputError saying what is missing."""
        layer = self.layer("lr", required=what)
        volume = layer_volume(layer)
        return layer, volume, self.lateral_model(volume)

    def reconstruct(self, planes: list[str] | None = None) -> Any:
        """Add the lazy lateral result of the LR layer (s times finer, or enhanced) over it, in a worker.

        Returns
        -------
        worker or None
        """
        from napari_emsr.plugin.workers.tasks import lateral_task

        host = self.host
        enhance = bool(host.reconstruct_params.enhance)
        try:
            layer, volume, model = self.apply_inputs("super-resolve it" if not enhance else "enhance it")
        except EMSRError as err:
            host.report_error(err, "reconstruction")
            return None
        factor = 1.0 if enhance else float(model.factor)
        host.set_status(f"Preparing the lazy {'enhanced' if enhance else f'x{factor:g}'} layer of {layer.name}...")
        button = self.reconstruct_button
        button.setEnabled(False)
        return host.start(
            lateral_task, volume, model, enhance, host.params.device,
            connect={"returned": partial(self._on_lateral, layer, volume, factor, enhance),
                     "errored": lambda err: host.report_error(err, what="reconstruction"),
                     "finished": lambda: button.setEnabled(True)},
        )

    def _on_lateral(self, layer: Any, volume: Any, factor: float, enhance: bool, array: Any) -> None:
        from napari_emsr.plugin.layers import lateral_layer_kwargs, paging_order
        from napari_emsr.plugin.lazy_layer import RestoredPlanes, lateral_cubic_region

        host, viewer = self.host, self.host.viewer
        if layer not in viewer.layers:
            return
        flat = viewer.dims.ndisplay == 2
        if flat and viewer.dims.ndim >= 3:
            viewer.dims.order = paging_order(viewer.dims.ndim, "xy")
        label = "enhanced" if enhance else f"x{factor:g}"
        name = f"{layer.name} {label}"
        data = RestoredPlanes(array, "xy", lateral_cubic_region(volume.data, factor), label)
        kwargs = lateral_layer_kwargs(layer, factor, name=name,
                                      metadata={"planes": "xy", "input": layer.name, "factor": factor,
                                                "enhance": enhance})
        new = self.blocks.add(name, data, kwargs)
        if flat and viewer.dims.ndim == 3:  # NOTE: a plane of the result in view (other layers may be deeper)
            nz, (sz, tz) = int(array.shape[0]), (float(kwargs["scale"][0]), float(kwargs["translate"][0]))
            if not tz - sz / 2 <= float(viewer.dims.point[0]) <= tz + sz * (nz - 0.5):
                viewer.dims.set_point(0, tz + sz * (nz // 2))
        new.visible = flat
        if not flat:
            self.blocks.hide_until_2d(new)
        host.runtime.reconstructed_layers = [new]
        what = "enhanced at the same resolution" if enhance else f"{factor:g} times finer"
        host.set_status(f"Added {name}: the xy planes of {layer.name} {what}, restored in the background as you "
                        "page through z (cubic interpolation meanwhile). Export writes the whole volume.")

    def export(self, path: str, planes: str | None = None) -> Any:
        """Write the lateral result of the LR layer to ``path`` (TIFF or OME-Zarr) in a worker."""
        from napari_emsr.plugin.workers.export_worker import export_lateral_task

        host = self.host
        enhance = bool(host.reconstruct_params.enhance)
        try:
            _, volume, model = self.apply_inputs("export it")
            if host.reconstruct_params.scheduler.strip():
                raise InputError("export on a dask scheduler is not supported for paired models yet: clear "
                                 "Export's 'on' field to export here")
        except EMSRError as err:
            host.report_error(err, "export")
            return None
        return self.exporter.run(export_lateral_task, (volume, model, str(path), enhance, host.params.device), path,
                                 total=1, guess=0.0, message=f"Exporting to {path}...")

    def after_training(self, model: Any) -> None:
        """Outline the HR field where training registered it (the model's registration), and say so."""
        reg = model.config.get("registration")
        lr = self.layer("lr")
        if not reg or lr is None:
            return
        offset, factor = tuple(reg["offset"]), float(reg["factor"])
        self.show_field(lr, offset, tuple(reg["size"]), factor, reg)
        self.box.show_registration(
            f"HR field at LR (y, x) = ({offset[0]:.2f}, {offset[1]:.2f}) px, residual {reg['residual']:.3f} "
            "(training's registration)")

    # ------------------------------------------------------------------------------------ preview
    def preview_anchor(self) -> tuple[Any, float] | None:
        """The layer the training preview is placed beside (the HR layer) and its lateral pixel size."""
        hr = self.layer("hr")
        if hr is None:
            return None
        return hr, float(hr.scale[-1])

    def preview_input(self, volume: Any, config: Any, index: int) -> Any:
        """None: the HR layer itself is the left image."""
        return None
