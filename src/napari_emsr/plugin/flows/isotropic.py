"""The isotropic flow: train on the picked stack, add lazy xz / yz / fused layers over it, export the isotropic
volume (:class:`napari_emsr.plugin.host.Flow`)."""

from __future__ import annotations

from functools import partial
from typing import Any

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.controllers.estimates import duration
from napari_emsr.plugin.controllers.preview import stretched_plane
from napari_emsr.plugin.host import Host, Tooltips
from napari_emsr.plugin.layers import paging_order, reconstruction_layer_kwargs, uncertainty_layer_kwargs
from napari_emsr.plugin.lazy_layer import RestoredPlanes, cubic_region, link
from napari_emsr.plugin.state import PLANE_LABELS, clock
from napari_emsr.plugin.workers.export_worker import export_task
from napari_emsr.plugin.workers.tasks import reconstruct_task


def runs_on_cpu(device: str) -> bool:
    """Whether ``device`` ("auto" included) means the CPU; torch is loaded once a model exists."""
    from napari_emsr.device import resolve_device

    return resolve_device(device) == "cpu"


class IsotropicFlow:
    """Restores z of the picked stack (every method but the lateral ones).

    Parameters
    ----------
    host : Host
        The panel.
    box : InputWidget
        The Input box.
    blocks : BlockPump
        Adds the restored layers.
    estimates : EstimatesController
        What a block and the export should take here.
    quality : QualityController
        Measures the result once it is added.
    export : ExportController
        Runs the export.
    """

    lateral = False
    compares = True
    measures_speed = True
    preview_text = "xz plane y={y}: sections | cubic | restored"

    def __init__(self, host: Host, box: Any, blocks: Any, estimates: Any, quality: Any, export: Any):
        self.host = host
        self.box = box
        self.blocks = blocks
        self.estimates = estimates
        self.quality = quality
        self.exporter = export

    def picked(self) -> None:
        """Nothing to prepare: the Input box already follows the picked layer."""

    def tooltips(self, budget: str, device: str) -> Tooltips:
        host = self.host
        layer = repr(host.input_params.layer) if host.input_params.layer else "the picked layer"
        labels = ", ".join(PLANE_LABELS[p] for p in host.reconstruct_params.planes) or "(tick one)"
        export = PLANE_LABELS[host.reconstruct_params.export_planes]
        return Tooltips(
            train=layer,
            reconstruct=(f"Add lazy {labels} layers of {layer}: the planes you page through are restored in the "
                         "background (cubic interpolation meanwhile); other views and 3D show interpolation, never "
                         "a frozen napari"),
            export=(f"Write the whole {export} volume of {layer} to OME-Zarr or TIFF (asks where), chunk by chunk in "
                    "the background; a cancelled zarr export resumes when exported again to the same path"),
        )

    # ------------------------------------------------------------------------------------ training
    def training_inputs(self) -> tuple[Any, Any]:
        host = self.host
        return host.current_volume(), host.params.to_config(host.input_params.factor)

    def preview_anchor(self) -> tuple[Any, float] | None:
        layer = self.host.current_layer()
        return None if layer is None else (layer, float(self.host.input_params.spacing[2]))

    def preview_input(self, volume: Any, config: Any, index: int) -> Any:
        nz = int(volume.data.shape[0])
        from napari_emsr.plugin.estimate import output_depth

        return stretched_plane(volume, index, float(config.factor), output_depth(nz, float(config.factor)))

    def after_training(self, model: Any) -> None:
        self.quality.after_training(model)

    # ------------------------------------------------------------------------------------ reconstruct
    def reconstruct(self, planes: list[str] | None = None) -> Any:
        """Add lazy layers of the reconstruction (xz-restored, yz-restored, fused) over the input."""
        host = self.host
        planes = list(planes or host.reconstruct_params.planes)
        try:
            if not planes:
                raise InputError("tick at least one of xz-restored, yz-restored, fused")
            layer = host.current_layer()
            volume = host.current_volume()
            model = host.model_or_method()
        except EMSRError as err:
            host.report_error(err, "reconstruction")
            return None
        factor = float(model.factor) if not isinstance(model, str) else float(host.input_params.factor)
        found = self.estimates.estimates().get("blocks", {})
        costs = ", ".join(
            f"a {PLANE_LABELS[p]} {'plane' if found[p][1] == 1 else 'block'} ≈ {duration(found[p][0])}"
            for p in planes if p in found
        )
        host.set_status("Preparing the lazy reconstruction" + (f" (here {costs})..." if costs else "..."))
        if "fuse" in planes and not isinstance(model, str) and runs_on_cpu(host.params.device):
            _notify_fused_cost()
        button = self.quality.reconstruct.button
        button.setEnabled(False)
        return host.start(
            reconstruct_task, volume, model, planes, host.params.device, host.reconstruct_params.deband,
            connect={"returned": partial(self._on_reconstructed, layer, volume, factor),
                     "errored": lambda err: host.report_error(err, what="reconstruction"),
                     "finished": lambda: button.setEnabled(True)},
        )

    def _on_reconstructed(self, layer: Any, volume: Any, factor: float, results: list) -> None:
        host, viewer = self.host, self.host.viewer
        if layer not in viewer.layers:
            return
        show_xz = any(p in ("xz", "fuse") for p, *_ in results)
        flat = viewer.dims.ndisplay == 2
        if flat and viewer.dims.ndim >= 3:
            # NOTE: roll the dims BEFORE adding the layers, so that the first planes shown are the ones the
            # layers are chunked for (any other plane only shows interpolation, see lazy_layer).
            viewer.dims.order = paging_order(viewer.dims.ndim, "xz" if show_xz else "yz")
        interpolate = cubic_region(volume.data, factor)
        added, made = [], {}
        for planes, array, _, joint in results:
            stand_in = None if planes == "uncertainty" else interpolate  # no interpolated stand-in for it
            made[planes] = RestoredPlanes(array, planes, stand_in, PLANE_LABELS[planes], *(joint or (None, 0)))
        if "uncertainty" in made:
            link(made["fuse"], made["uncertainty"])  # one network run fills a block of both
        for planes, _, out_spacing, _ in results:
            name = f"{layer.name} {PLANE_LABELS[planes]}"
            kwargs = reconstruction_layer_kwargs(
                layer, volume, out_spacing, name=name, spacing=host.input_params.spacing,
                unit=host.input_params.unit, metadata={"planes": planes, "input": layer.name},
            )
            if planes == "uncertainty":
                kwargs = uncertainty_layer_kwargs(kwargs)
            new = self.blocks.add(name, made[planes], kwargs)
            # a yz layer seen in the xz view shows only interpolation: it stays hidden there (until the yz view)
            new.visible = flat and not (show_xz and planes == "yz")
            if show_xz and planes == "yz":
                self.blocks.hide_for_view(new)
            if not flat and not (show_xz and planes == "yz"):
                self.blocks.hide_until_2d(new)  # shown when the view goes back to 2D
            added.append(new)
        host.runtime.reconstructed_layers = added
        self.box.set_layer(layer)
        if flat:
            viewer.reset_view()  # NOTE: the camera fits the stack and its results (the preview planes are gone)
        host.set_status(
            f"Added {', '.join(layer.name for layer in added)}: planes are restored in the background as you view "
            f"them ({'page through y for xz planes' if show_xz else 'page through x for yz planes'}); other views "
            "show cubic interpolation."
        )
        if "uncertainty" in made and not getattr(self, "told_uncertainty", False):
            from napari.utils.notifications import show_info

            # NOTE: a notification, not only the status line: the layers' own lines replace it at once.
            self.told_uncertainty = True
            show_info(
                f"napari-emsr: {layer.name} uncertainty (hot colours over the fused layer) is bright where the xz "
                "and yz restorations disagree: trust those structures less. Hide it with its eye icon."
            )
        self.quality.reconstructed(volume, factor)

    # ------------------------------------------------------------------------------------ export
    def export(self, path: str, planes: str | None = None) -> Any:
        """Reconstruct the whole volume and write it to ``path`` (OME-Zarr or TIFF) in a worker."""
        host = self.host
        rp = host.reconstruct_params
        planes = planes or rp.export_planes
        try:
            volume = host.current_volume()
            model = host.model_or_method()
        except EMSRError as err:
            host.report_error(err, "export")
            return None
        scheduler = rp.scheduler.strip()
        found = self.estimates.estimates() if planes == rp.export_planes else {}
        guess = found["export"][0] if found and not scheduler else 0.0
        where = f" on {scheduler}" if scheduler else ""
        told = f" (estimated {clock(guess)} here)" if guess else ""
        return self.exporter.run(
            export_task, (volume, model, str(path), planes, host.params.device, scheduler, rp.deband), path,
            total=found["export"][1] if found else 1, guess=guess, message=f"Exporting to {path}{where}{told}...",
        )


def _notify_fused_cost() -> None:
    """Say that a fused block is slow on a CPU (it is computed in the background; napari never waits)."""
    from napari.utils.notifications import show_info

    show_info(
        "napari-emsr: a fused plane needs the yz planes that cross it, so the fused layer restores 64 rows at "
        "a time: on a CPU each new block takes a while (benchmarks/bench_plane_latency.py --fused-viewer "
        "measures it). Blocks are computed in the background, cubic interpolation is shown meanwhile, and "
        "the activity dock shows (and cancels) what is being computed."
    )
