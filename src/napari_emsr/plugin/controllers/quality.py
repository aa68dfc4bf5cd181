"""Quality without ground truth: reference-free measures of the last reconstruction, and (when asked) the model
judged on the stack's own held-out sections (:func:`napari_emsr.heldout.estimate`)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from napari_emsr.errors import EMSRError, InputError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.lazy_layer import RestoredPlanes

logger = logging.getLogger(__name__)


def heldout_task(volume: Any, model: Any, steps: int | None, device: str) -> Any:
    """:func:`napari_emsr.heldout.estimate` in a worker (its judge trains with the panel's CPU share)."""
    from napari_emsr.device import resolve_device
    from napari_emsr.heldout import estimate
    from napari_emsr.plugin.workers.train_worker import cpu_threads

    threads = cpu_threads() if resolve_device(device) == "cpu" else None
    return estimate(volume, model, steps=steps, device=device, threads=threads)


def heldout_line(score: Any) -> str:
    """``estimated gain over cubic: +1.02 dB ± 0.8 (31 held-out sections)``: the calibrated estimate of
    :func:`napari_emsr.heldout.estimate`, with how far off it was on test stacks like this one."""
    line = (f"estimated gain over cubic: {score.gain_db:+.2f} dB \u00b1 {score.error_db:.1f} "
            f"({score.sections} held-out sections)")
    if score.noisy:
        line += "; noisy stack: the estimate is least certain there"
    return line


class QualityController:
    """Measures the result and shows the figures in the Reconstruct box (and the held-out figure in the plot).

    Parameters
    ----------
    host : Host
        The panel.
    reconstruct : ReconstructWidget
        Its quality line and its "judge on held-out sections" box.
    plot : LossPlotWidget
        The gain plot gets the held-out figure as a point.
    """

    def __init__(self, host: Host, reconstruct: Any, plot: Any):
        self.host = host
        self.reconstruct = reconstruct
        self.plot = plot
        self.measures = ("", "")  # (text, tooltip) of the reference-free measures
        self.heldout_text = ""
        self.heldout_tip = ""  # what the line has no room for: the noisy stack's caveat, in full
        self.heldout_request = 0
        self.heldout_worker: Any = None
        host.reconstruct_params.events.heldout.connect(self._on_heldout_asked)

    def clear(self) -> None:
        """Show no measure (a flow without them)."""
        self.measures = ("", "")
        self.show()

    def show(self) -> None:
        text, tip = self.measures
        lines = [line for line in (text, self.heldout_text) if line]
        tips = [t for t in (tip, "Held-out sections: every other section of the stack is held out, the others are "
                            "restored at twice the section spacing by a judge trained like this model, and the "
                            "prediction is scored against the real held-out sections, in dB over cubic "
                            "interpolation (napari_emsr.heldout)." if self.heldout_text else "",
                            self.heldout_tip if self.heldout_text else "") if t]
        self.reconstruct.show_quality("\n".join(lines), " ".join(tips))

    # ------------------------------------------------------------------------------------ held-out sections
    def _say(self, text: str, tip: str = "") -> None:
        """The held-out line (and what its tooltip adds: the noisy stack's caveat in full), shown."""
        self.heldout_text, self.heldout_tip = text, tip
        self.show()

    def after_training(self, model: Any) -> None:
        """A new model: its held-out figure is out of date; measured again when asked for."""
        self.host.runtime.heldout = None
        if self.host.reconstruct_params.heldout:
            self.judge(model)
        else:
            self._say("")

    def _on_heldout_asked(self, on: bool, *_: Any) -> None:
        model = self.host.runtime.model
        if on and model is not None and self.host.runtime.heldout is None and self.heldout_worker is None:
            self.judge(model)
        elif not on:
            self._say("")

    def judge(self, model: Any = None) -> Any:
        """Judge ``model`` (default: the panel's) on the picked stack's held-out sections, in a worker."""
        host = self.host
        model = model if model is not None else host.runtime.model
        try:
            if model is None:
                raise InputError("no model to judge yet: train or load one first")
            volume = host.current_volume()
        except EMSRError as err:
            self._say(f"held-out sections: {err}")
            return None
        self.heldout_request += 1
        request = self.heldout_request
        self._say("held-out sections: judging (a small network trains on every other section)...")

        def done() -> None:
            if request == self.heldout_request:
                self.heldout_worker = None

        self.heldout_worker = host.start(
            heldout_task, volume, model, host.reconstruct_params.heldout_steps, host.params.device,
            connect={"returned": partial(self._on_heldout, request, model),
                     "errored": partial(self._on_heldout_error, request), "finished": done},
            progress={"desc": "napari-emsr: judging on held-out sections"},
        )
        return self.heldout_worker

    def _on_heldout(self, request: int, model: Any, score: Any) -> None:
        if request != self.heldout_request or model is not self.host.runtime.model:
            return
        self.host.runtime.heldout = score
        self.plot.show_heldout(float(model.step), float(score.gain_db))
        self._say(heldout_line(score), f"{score.caveat[:1].upper()}{score.caveat[1:]}." if score.caveat else "")

    def _on_heldout_error(self, request: int, err: BaseException) -> None:
        if request != self.heldout_request:
            return
        if isinstance(err, EMSRError):
            self._say(f"held-out sections: {err}")
        else:
            logger.warning("held-out sections not judged", exc_info=(type(err), err, err.__traceback__))
            self._say(f"held-out sections not judged: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------------------------ reference-free measures
    def reconstructed(self, volume: Any, factor: float) -> None:
        """New layers: measure them (a learned method only; interpolation is its own baseline)."""
        self.measures = ("", "")
        self.show()
        if not self.host.interpolation_only():
            self.measure(volume, factor)

    def measure(self, volume: Any = None, factor: float | None = None) -> Any:
        """Reference-free measures of the input, cubic and the first restored layer, on a crop, in a worker.

        The crop is a few planes around the middle of the axis the layer is chunked along (the whole block for
        the fused layer), so this restores that much; the runtime's ``quality`` holds the result, the Reconstruct
        box shows it with one line of reading, and a warning comes when the result bands.

        Returns
        -------
        worker or None
        """
        from napari_emsr.plugin.workers.tasks import quality_task

        host = self.host
        layers = [layer for layer in host.runtime.reconstructed_layers
                  if isinstance(layer.data, RestoredPlanes) and layer.data.planes != "uncertainty"]
        if not layers:
            return None
        try:
            volume = volume if volume is not None else host.current_volume()
        except EMSRError:
            return None
        factor = float(factor if factor is not None else host.input_params.factor)
        data = min((layer.data for layer in layers), key=lambda d: max(d.chunks[d.axis]))  # the cheapest crop
        n = data.shape[data.axis]
        block = data.chunks[data.axis][0]
        centre = n // 2
        if block > 1:
            start = centre // block * block
            planes = slice(start, min(n, start + block))
        else:
            planes = slice(max(0, centre - 16), min(n, centre + 16))
        host.runtime.quality = None
        self.measures = (f"Measuring quality (no ground truth) on {data.label}...", "")
        self.show()
        return host.start(
            quality_task, volume, data.dask, data.axis, planes, factor,
            connect={"returned": partial(self._on_quality, data.label), "errored": self._on_quality_error},
        )

    def _on_quality(self, label: str, result: dict) -> None:
        from napari.utils.notifications import show_warning

        from napari_emsr.plugin.workers.tasks import BANDING_WARNING

        self.host.runtime.quality = result
        inp, cubic, restored = result["input"], result["cubic"], result["restored"]
        axis = "zyx"[result["axis"]]
        bands = restored["banding"] < BANDING_WARNING
        text = (
            f"Quality (no ground truth): anisotropy input {inp['anisotropy']:.2f} → cubic {cubic['anisotropy']:.2f} "
            f"→ restored {restored['anisotropy']:.2f}; banding cubic {cubic['banding']:.2f}, restored "
            f"{restored['banding']:.2f}" + (": the result BANDS" if bands else "") + " (1 is ideal for both)"
        )
        deband = result.get("deband")
        if deband is not None:
            from napari_emsr.deband import BANDED

            # NOTE: which way was chosen and why: the network's own output measured on the probe
            text += (
                f". Deband: the network's output banded {deband['banding']:.2f}, so the planes between sections "
                "are filtered to the sections' detail (untick deband to see it as it is)"
                if deband["active"] else
                f". Deband: not needed, the network's output banded {deband['banding']:.2f} (≥ {BANDED}): "
                "left as it is"
            )
        tip = (
            f"Measured on {label}, {axis} {result['start']}-{result['stop'] - 1}. Anisotropy: lateral / axial "
            "resolution from the power spectra (napari_emsr.metrics.anisotropy), 1 = as sharp along z as across. "
            "Banding: least / most detailed position between sections (napari_emsr.metrics.section_banding), "
            f"1 = as much detail between sections as at them; below {BANDING_WARNING} the planes between sections "
            "are visibly softer than the sections."
        )
        self.measures = (text, tip)
        self.show()
        if bands:
            show_warning(
                f"napari-emsr: the {label} result bands (banding {restored['banding']:.2f}, 1 = none): the planes "
                "between sections have less detail than the sections. Train longer, or try another Sections profile."
            )

    def _on_quality_error(self, err: BaseException) -> None:
        logger.info("quality not measured: %s", err)
        self.measures = (f"Quality not measured: {err} (press Reconstruct again to retry).", "")
        self.show()
