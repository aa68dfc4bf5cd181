"""The two small interfaces of the dock panel: what its controllers and flows may ask of it (:class:`Host`), and
what a method's flow supplies to it (:class:`Flow`).

The panel (:class:`napari_emsr.plugin.panel.EMSRWidget`) implements :class:`Host`; a controller or a flow is
given the host and the few widgets and controllers it works with, never the panel's private methods. The
isotropic flow (:class:`napari_emsr.plugin.flows.isotropic.IsotropicFlow`) and the paired one
(:class:`napari_emsr.plugin.flows.paired.PairedFlow`) implement :class:`Flow`: the panel asks the flow of the
picked method, instead of asking which method is picked.

Importing this module imports neither Qt nor torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from napari_emsr.plugin.state import (
        InputParameters,
        ReconstructParameters,
        RuntimeState,
        TrainingParameters,
        TrainingStatus,
    )


class Host(Protocol):
    """What the panel offers its controllers and flows."""

    viewer: Any
    input_params: InputParameters
    params: TrainingParameters
    reconstruct_params: ReconstructParameters
    runtime: RuntimeState
    status: TrainingStatus

    @property
    def flow(self) -> Flow:
        """The flow of the picked method."""

    def start(self, func: Callable, *args: Any, connect: dict, progress: dict | None = None, **kwargs: Any) -> Any:
        """Run ``func`` in a thread worker whose slots run only while the panel lives; the worker (or None)."""

    def set_status(self, text: str) -> None:
        """Show one line under the panel."""

    def status_text(self) -> str:
        """The line shown under the panel now."""

    def report_error(self, err: BaseException, what: str = "napari-emsr") -> None:
        """The status line and an error notification that says what to do."""

    def confirm(self, question: str) -> bool:
        """Ask the user yes or no (long work); True for yes."""

    def current_layer(self) -> Any:
        """The picked image layer, or None."""

    def current_volume(self) -> Any:
        """The picked layer as a :class:`napari_emsr.io.Volume` (InputError when there is none)."""

    def interpolation_only(self) -> bool:
        """Whether the picked method learns nothing (cubic, linear)."""

    def model_or_method(self) -> Any:
        """The model to apply, or the method's name for interpolation (InputError when there is no model)."""


@dataclass(frozen=True)
class Tooltips:
    """What the Train, Reconstruct and Export buttons say they will do (``train``: the data trained on)."""

    train: str
    reconstruct: str
    export: str


class Flow(Protocol):
    """What a method's flow supplies to the panel.

    Attributes
    ----------
    box : QWidget
        The box that picks the flow's inputs (the Input box, or the paired method's LR / HR box).
    lateral : bool
        Whether the flow restores xy planes (Reconstruct and Export then offer no xz / yz / fused choice).
    compares : bool
        Whether Side by side and Flip apply.
    measures_speed : bool
        Whether the speed probes and the estimates apply.
    preview_text : str
        What the canvas says about the training preview's planes, left to right, in a few words (a cell is a
        third of the canvas); ``{y}`` becomes the previewed row.
    """

    box: Any
    lateral: bool
    compares: bool
    measures_speed: bool
    preview_text: str

    def picked(self) -> None:
        """The flow's method was picked in the panel."""

    def tooltips(self, budget: str, device: str) -> Tooltips:
        """What the buttons will do with the current inputs."""

    def training_inputs(self) -> tuple[Any, Any]:
        """(volume, TrainConfig) to train on (InputError saying what is missing)."""

    def preview_anchor(self) -> tuple[Any, float] | None:
        """The layer the preview planes are placed beside and its lateral pixel size."""

    def preview_input(self, volume: Any, config: Any, index: int) -> Any:
        """The input's own plane shown left of the preview (a 2D array), or None."""

    def after_training(self, model: Any) -> None:
        """Show what the trained model says about the inputs."""

    def reconstruct(self, planes: list[str] | None = None) -> Any:
        """Add the lazy result layers; the worker or None."""

    def export(self, path: str, planes: str | None = None) -> Any:
        """Write the whole result to ``path``; the worker or None."""
