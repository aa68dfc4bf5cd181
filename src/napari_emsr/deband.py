"""Section-phase equalisation: the same lateral detail between sections as at them (no banding).

A network that restores z from sections F planes apart predicts, between sections, the mean of what could lie
there: those planes have less lateral detail than the sections, which it reproduces almost as they are. The
volume then bands with the section period (:func:`napari_emsr.metrics.section_banding`; medulla, F = 8, point
sections: 0.56 where the ground truth has 0.98), and fusing the xz and yz restorations, which agree at the sections
and not between them, deepens the bands.

The correction is linear and lateral. Output planes are grouped by their position between sections (``ceil(F)``
phase bins, as ``section_banding`` does). On a probe of the restored volume (a central crop), the power spectrum
along x and along y of each bin is measured in the bands of a short symmetric filter; each bin gets, per axis, the
filter whose gain brings its spectrum to the geometric mean over the bins (gain clipped to [1/2, 2], 1 at zero
frequency: intensities are kept). Planes between sections are sharpened a little, sections softened a little;
the planes are filtered along x and y (reflecting at the volume's edges), so a chunk needs only ``radius`` pixels
of its neighbours.

Where the probe does not band (ratio at least :data:`BANDED`) nothing is filtered.

Settings chosen on one development volume and the ISBI stack, reported on held-out data by
``benchmarks/bench_deband.py`` (figures in ``docs/benchmarks.md``, section Debanding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import phase_bins

#: Half-length of the filters (px): a chunk reads this many pixels of its neighbours' output.
RADIUS = 8
#: Largest and (inverse) smallest gain of a filter at any frequency.
MAX_GAIN = 2.0
#: Banding ratio (:func:`napari_emsr.metrics.section_banding`) of the probe from which the filters are left out:
#: above it the planes between sections are about as detailed as the sections (cubic interpolation gives
#: about as much as an isotropic volume) and filtering would only trade PSNR for nothing visible
#: (``benchmarks/bench_deband.py``).
BANDED = 0.85
#: Rounds of the fit, each measured on the probe as the previous round's filters leave it (see :func:`fit`).
PASSES = 3
#: Probe: rows and columns of the central crop measured.
PROBE_ROWS, PROBE_COLS = 32, 256


@dataclass(frozen=True)
class Debander:
    """Per-phase filters along the lateral axes of a (z, y, x) output.

    ``filters`` maps an axis (1: y, 2: x) to an array (bins, 2 * radius + 1) of symmetric filters summing to 1.
    """

    factor: float
    filters: dict
    radius: int = RADIUS
    banding: float | None = None  # the probe's banding ratio when fitted

    @property
    def active(self) -> bool:
        """Whether any plane is filtered (False: the output is left as it is)."""
        return bool(self.filters)

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Filter a float block (Z_out, h, w) whose z is the whole output axis; reflects at its lateral edges
        (give it ``radius`` px of neighbours to get the values of a larger volume)."""
        from scipy.ndimage import convolve1d

        which = phase_bins(block.shape[0], self.factor)
        out = np.asarray(block, np.float32)
        for axis, taps in self.filters.items():
            if out.shape[axis] < 2:
                continue
            res = np.empty_like(out)
            for b in range(len(taps)):
                sel = which == b
                if sel.any():
                    res[sel] = convolve1d(out[sel], taps[b].astype(np.float32), axis=axis, mode="reflect")
            out = res
        return out

    def gains(self) -> dict:
        """The gain of each bin's filter at the highest frequency of its grid (1: unchanged), per axis name."""
        names = {1: "y", 2: "x"}
        r = self.radius
        out = {}
        for axis, taps in self.filters.items():
            k = np.arange(-r, r + 1)
            out[names[axis]] = [round(float(np.sum(t * np.cos(2 * np.pi * k * (r / (2 * r + 1))))), 3) for t in taps]
        return out


def fit(probe: np.ndarray, factor: float, axes: tuple[int, ...] = (1, 2), *, radius: int = RADIUS,
        max_gain: float = MAX_GAIN, banded: float | None = BANDED, passes: int = PASSES) -> Debander:
    """The filters that give every phase bin of ``probe`` (Z_out, h, w; float) the geometric-mean spectrum; none
    (an inactive :class:`Debander`) when the probe's banding ratio is at least ``banded`` (None: always fit).

    The gains are refined over ``passes`` rounds, each measured on the probe filtered by the previous round's
    filters along every axis: filtering along x changes the spectrum along y as well (a plane sharpened in x has
    more power at every y frequency), so gains fitted per axis from the unfiltered probe overshoot, and the
    filter's response between its grid frequencies differs from the gains asked for.

    Filter taps are rounded to 1e-6 so that processes whose float sums differ in the last bits (another thread
    count, another worker) build the same filters.
    """
    from .metrics import section_banding

    p = np.asarray(probe, np.float64)
    ratio = float(section_banding(p, factor)["ratio"]) if p.shape[0] >= 2 * factor else 1.0
    if banded is not None and ratio >= banded:
        return Debander(float(factor), {}, radius, round(ratio, 3))
    bins = math.ceil(factor)
    axes = tuple(a for a in axes if p.shape[a] >= 2 * radius + 1)  # too narrow to measure: left alone
    gains = {a: np.ones((bins, radius + 1)) for a in axes}
    deb = Debander(float(factor), {}, radius, round(ratio, 3))
    for _ in range(max(1, int(passes))):
        q = np.asarray(deb.apply(p), np.float64) if deb.active else p
        for a in axes:
            power = _band_power(q, factor, a, radius)
            target = np.exp(np.log(power).mean(axis=0))
            gains[a] = np.clip(gains[a] * np.sqrt(target / power), 1.0 / max_gain, max_gain)
            gains[a][:, 0] = 1.0
        deb = Debander(float(factor), {a: _taps(gains[a], radius) for a in axes}, radius, round(ratio, 3))
    return deb


def _band_power(p: np.ndarray, factor: float, axis: int, radius: int) -> np.ndarray:
    """Mean power (bins, radius + 1) of each phase bin of ``p`` along ``axis``, in the bands of the filter grid."""
    which = phase_bins(p.shape[0], factor)
    n_taps = 2 * radius + 1
    n = p.shape[axis]
    other = 2 if axis == 1 else 1
    spec = np.abs(np.fft.rfft(p - p.mean(axis=axis, keepdims=True), axis=axis)) ** 2
    spec = spec.mean(axis=other)  # (Z_out, n // 2 + 1)
    band = np.rint(np.fft.rfftfreq(n) * n_taps).astype(int)  # the filter-grid frequency nearest each bin
    power = np.ones((math.ceil(factor), radius + 1))
    for b in range(power.shape[0]):
        rows = spec[which == b]
        if len(rows) == 0:
            continue
        for j in range(radius + 1):
            cols = rows[:, band == j]
            if cols.size:
                power[b, j] = max(float(cols.mean()), 1e-20)
    return power


def _taps(gain: np.ndarray, radius: int) -> np.ndarray:
    """Symmetric filters (bins, 2 * radius + 1) summing to 1 whose response at the grid frequencies is ``gain``."""
    taps = np.empty((gain.shape[0], 2 * radius + 1))
    for b in range(gain.shape[0]):
        full = np.concatenate([gain[b], gain[b][1:][::-1]])
        h = np.roll(np.real(np.fft.ifft(full)), radius)
        taps[b] = np.round(h / h.sum(), 6)
    return taps


def probe_region(shape: tuple[int, int], rows: int = PROBE_ROWS, cols: int = PROBE_COLS) -> tuple[int, int, int, int]:
    """The central crop (y0, y1, x0, x1) of a (ny, nx) plane measured by :func:`fit`."""
    ny, nx = (int(s) for s in shape)
    h, w = min(ny, rows), min(nx, cols)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    return y0, y0 + h, x0, x0 + w
