"""A small plot of the training loss and of the gain over cubic interpolation on held-out planes."""

from __future__ import annotations

import math

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QVBoxLayout, QWidget


class LossPlotWidget(QWidget):
    """Two stacked pyqtgraph plots sharing the step axis: training loss (log scale) and gain over cubic in dB.

    The gain is validation PSNR minus the PSNR of cubic interpolation on the same planes: above zero the
    network already beats interpolation.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        import pyqtgraph as pg

        self._pg = pg
        self.graphics = pg.GraphicsLayoutWidget()
        # NOTE: pyqtgraph asks for ~480 px; bounded, the panel fits a 1600 x 1150 window.
        self.graphics.setMinimumHeight(120)
        self.graphics.setMaximumHeight(130)
        self.graphics.setBackground(None)
        self.loss_plot = self.graphics.addPlot(row=0, col=0)
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.3)
        self.gain_plot = self.graphics.addPlot(row=1, col=0)
        self.gain_plot.setLabel("left", "gain (dB)")
        self.gain_plot.setLabel("bottom", "step")
        self.gain_plot.showGrid(x=True, y=True, alpha=0.3)
        self.gain_plot.setXLink(self.loss_plot)
        for plot in (self.loss_plot, self.gain_plot):
            # NOTE: "dB (x0.001)" or "step (x0.001)" on an empty plot reads badly: no SI prefix scaling
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
        # NOTE: the two plots share the step axis: only the lower one writes it (the labels overlapped)
        self.loss_plot.getAxis("bottom").setStyle(showValues=False)
        for plot in (self.loss_plot, self.gain_plot):
            plot.getAxis("left").setWidth(44)
        self.gain_plot.addItem(
            pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("gray", style=Qt.PenStyle.DashLine))
        )
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#4aa3df", width=1.5))
        self.gain_curve = self.gain_plot.plot(
            pen=pg.mkPen("#f0a030", width=2), symbol="o", symbolSize=5, symbolBrush="#f0a030"
        )
        self.heldout_points = pg.ScatterPlotItem(symbol="star", size=12, brush=pg.mkBrush("#e04050"),
                                                 pen=pg.mkPen("w", width=0.5), name="held-out sections")
        self.gain_plot.addItem(self.heldout_points)
        self.heldout: tuple[float, float] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)
        self.clear_plot()

    def clear_plot(self) -> None:
        """Forget every point."""
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.gain_steps: list[float] = []
        self.gains: list[float] = []
        self.loss_curve.setData([], [])
        self.gain_curve.setData([], [])
        self.heldout = None
        self.heldout_points.setData([], [])
        self._empty(True)

    def _empty(self, empty: bool) -> None:
        """An empty plot says so, with a step range of a training's start (no axis of thousandths)."""
        if getattr(self, "is_empty", None) == empty:
            return
        self.is_empty = empty
        self.gain_plot.setLabel("bottom", "step (no training yet)" if empty else "step")
        if empty:
            self.gain_plot.setXRange(0, 10, padding=0)
            self.gain_plot.setYRange(-1, 1, padding=0)
        else:
            self.gain_plot.enableAutoRange()
            self.loss_plot.enableAutoRange()

    def show_heldout(self, step: float, gain: float) -> None:
        """Mark the held-out-section figure (dB over cubic) of the model at ``step`` in the gain plot."""
        self.heldout = (float(step), float(gain))
        self.heldout_points.setData([float(step)], [float(gain)])
        self._empty(False)

    def update_plot(self, step: int, loss: float | None, gain: float | None = None) -> None:
        """Add the loss (and, where there is one, the gain) of ``step`` and redraw."""
        self.add_points(step, loss, gain)
        self.redraw()

    def add_points(self, step: int, loss: float | None, gain: float | None = None) -> None:
        """Add points without redrawing (call :meth:`redraw` now and then); a repeated step replaces."""
        if loss is not None and math.isfinite(loss) and loss > 0:
            _put(self.steps, self.losses, float(step), float(loss))
        if gain is not None and math.isfinite(gain):
            _put(self.gain_steps, self.gains, float(step), float(gain))

    def redraw(self) -> None:
        """Show the points added so far."""
        self._empty(not self.steps and not self.gain_steps and self.heldout is None)
        self.loss_curve.setData(self.steps, self.losses)
        self.gain_curve.setData(self.gain_steps, self.gains)
        ticks = loss_ticks(self.losses)
        # NOTE: on a log axis spanning less than a decade pyqtgraph labels one value or none: give it ours.
        self.loss_plot.getAxis("left").setTicks([ticks] if ticks else None)


def loss_ticks(losses: list[float], count: int = 3) -> list[tuple[float, str]]:
    """Labelled ticks for the log-scaled loss axis: ``count`` values spread over the losses' range.

    Returns
    -------
    list of (float, str)
        (log10 of the value, its label with two significant digits); empty without positive losses.
    """
    values = [v for v in losses if v > 0 and math.isfinite(v)]
    if not values:
        return []
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    ticks = []
    for i in range(count):
        value = float(f"{10 ** (lo + (hi - lo) * i / (count - 1)):.2g}")
        label = f"{value:.2g}"
        if not ticks or ticks[-1][1] != label:
            ticks.append((math.log10(value), label))
    return ticks


def _put(xs: list[float], ys: list[float], x: float, y: float) -> None:
    if xs and xs[-1] == x:
        ys[-1] = y
    else:
        xs.append(x)
        ys.append(y)
