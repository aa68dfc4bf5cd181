"""How the sections were cut, fitted from the stack alone: its spectrum along z against lateral lines degraded by a
candidate section profile (:func:`fit_profile`). Numpy only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .degrade import _soft_slab, profile_kernel, section_kernel
from .errors import InputError
from .geometry import check_factor, to_front

#: Profiles ordered from least to most axial blur.
BLUR_ORDER = ("point", "slab", "gaussian")
#: The fit needs this many sections (and as many F-spaced lateral samples) to resolve the spectra ...
MIN_SPECTRUM_LENGTH = 12
#: ... or this many where at least :data:`SHORT_SPECTRUM_LINES` lines along z average the spectrum. Measured: at
#: F = 12 a 125-slice ground truth leaves 11 sections; with 12 the fit gave up there and trained point sampling on
#: slab and Gaussian stacks (report volume, 10 minutes: +0.08 and -0.21 dB over cubic); the 11-long spectra of
#: 250 x 250 lines still tell point (0-0.30 F), slab and Gaussian (FWHM 1.48-1.62 F) apart on both medulla volumes.
MIN_SHORT_SPECTRUM_LENGTH = 8
SHORT_SPECTRUM_LINES = 128 * 128


def _fine_residual(plane: np.ndarray) -> np.ndarray:
    """A 2D image's Laplacian-difference residual (Immerkaer 1996's mask), borders cut: mostly its white noise."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    return ndimage.convolve(np.asarray(plane, np.float32), mask, mode="mirror")[1:-1, 1:-1]


def noise_sigma(plane: np.ndarray) -> float:
    """White-noise standard deviation of a 2D image (Immerkaer 1996: a Laplacian-difference mask)."""
    return float(math.sqrt(math.pi / 2.0) * np.abs(_fine_residual(plane)).mean() / 6.0)


def _line_spectrum(lines: np.ndarray, length: int) -> np.ndarray:
    """Mean power spectrum of Hann-windowed, mean-free segments of ``length`` along the last axis."""
    lines = lines.reshape(-1, lines.shape[-1])
    w = np.hanning(length + 2)[1:-1].astype(np.float32)
    total, count = 0.0, 0
    for s in range(0, lines.shape[1] - length + 1, max(1, length // 2)):
        seg = lines[:, s : s + length]
        seg = (seg - seg.mean(axis=1, keepdims=True)) * w
        total = total + (np.abs(np.fft.rfft(seg, axis=1)) ** 2).sum(axis=0)
        count += seg.shape[0]
    return total / count / float((w**2).sum())


def _transfer(freq: np.ndarray, profile, factor: float) -> np.ndarray:
    """Frequency response of the section kernel at ``freq`` (cycles per lateral pixel)."""
    k = profile_kernel(profile, factor)
    if k is None:
        return np.ones_like(freq)
    r = len(k) // 2
    return np.cos(2.0 * np.pi * np.outer(freq, np.arange(-r, r + 1))) @ k.astype(np.float64)


@functools.lru_cache(maxsize=8)
def _tissue_spectrum(n: int, alpha: float = 3.0) -> np.ndarray:
    """``A[f, v] = sum_u (f^2 + u^2 + v^2)^(-alpha / 2)``: an isotropic ``|k|^-alpha`` tissue spectrum summed over
    one transverse axis, at the rfft frequencies of ``n`` (rows) and 201 frequencies v along the sections."""
    g = np.linspace(-0.5, 0.5, 201)
    f2 = np.maximum(np.abs(np.fft.rfftfreq(n)), 1e-3) ** 2
    out = np.empty((len(f2), len(g)))
    for i, f in enumerate(f2):
        out[i] = ((f + (g**2)[:, None] + (g**2)[None, :]) ** (-alpha / 2.0)).sum(axis=0)
    return out


def _projection_gain(n: int, profile, factor: float) -> np.ndarray:
    """How much a lateral line spectrum (at the rfft frequencies of ``n``) loses because each section projects the
    tissue over its thickness.

    The lateral planes of a stack cut with a thick profile are themselves averages over the section, so a lateral
    axis blurred with the same profile looks blurrier than the real z axis. For isotropic tissue with a 3D power
    spectrum ``|k|^-3`` the unprojected/projected ratio of line spectra at ``freq`` is
    ``sum S / sum S |H(v)|^2`` over the two other frequency axes (u, v), with v along the sections.
    """
    if profile_kernel(profile, factor) is None:
        return np.ones(n // 2 + 1)
    a = _tissue_spectrum(n)
    h2 = _transfer(np.linspace(-0.5, 0.5, 201), profile, factor) ** 2
    return a.sum(axis=1) / (a @ h2)


#: The least correlation of averaged noise one section apart the noise split divides by (see
#: :meth:`_SpectrumMatch.simulated`): below it the measured correlation (0.00-0.01 on point sections and with
#: acquisition noise) is read as a share of 1.
NOISE_CORRELATION_FLOOR = 0.05


def section_correlation(sections: np.ndarray) -> float:
    """Correlation of neighbouring sections' fine residuals (the noise-estimator mask of :func:`noise_sigma`), over
    a stack's sections (K, Y, X). Tissue barely correlates at that scale one section apart (point-sampled medulla
    at F = 4: 0.00); noise averaged by a profile wider than the spacing does."""
    if len(sections) < 2:
        return 0.0
    r = np.stack([_fine_residual(p) for p in sections])
    r -= r.mean(axis=(1, 2), keepdims=True)
    den = math.sqrt(float((r[1:] ** 2).sum()) * float((r[:-1] ** 2).sum()))
    return float((r[1:] * r[:-1]).sum() / den) if den > 0 else 0.0


def _noise_correlation(kern: np.ndarray | None, factor: float) -> float:
    """Correlation one section apart of white noise averaged by a section kernel (0 for point sampling)."""
    if kern is None:
        return 0.0
    k = np.asarray(kern, np.float64)
    ac = np.correlate(k, k, mode="full") / float((k**2).sum())
    return float(np.interp(factor, np.arange(len(ac)) - (len(k) - 1), ac, right=0.0))


def as_float32(a) -> np.ndarray:
    """A numpy or dask array (or a lazy slice of one) read into memory as float32."""
    return np.asarray(a.compute() if hasattr(a, "compute") else a, dtype=np.float32)


class _SpectrumMatch:
    """The stack's spectrum along z, and lateral lines degraded by a candidate profile to compare with it.

    Tissue is statistically isotropic, so the power spectrum of lines along z should match that of lateral lines
    degraded the way z was acquired. For a candidate profile the lateral lines of a few planes are blurred with it
    (corrected for the projection the sections already carry, :func:`_projection_gain`), sampled every F pixels,
    and their spectrum is compared with the spectrum along z (RMS of the log ratio with the mean removed: a free
    gain). ``length`` is 0 when the stack is too small to tell.

    The sections' white noise (``sigma``) is of two kinds. Noise of the imaged volume itself (what a thin sample
    of it would show) is averaged by the profile like the tissue: its share of each lateral frequency
    (``noise_share``) is scaled back to its level before that (``1 / sum k^2``, white in 3D) and blurred along z
    with the tissue. Acquisition noise, added to each section after cutting, is white along z whatever the
    profile: its power is taken out of the filtered lines (only the tissue gets the projection correction) and the
    sampled lines are given ``sigma^2`` of white noise. (It used to be filtered with the tissue, projection correction
    included, and topped up with ``sigma^2 (1 - sum k^2)``: on noisy point-sampled stacks a thin blurred slab then
    fitted closer than point sampling, and point sampling was lost; docs/benchmarks.md.) The split comes from the
    stack: noise averaged by a profile wider than F correlates between neighbouring sections as the kernel does at
    lag F, acquisition noise does not, so the measured correlation of neighbouring sections' fine residuals
    (:func:`section_correlation`) over the candidate's expected one (:func:`_noise_correlation`) is the first
    kind's share. Measured on the medulla stacks at F = 4: 0.53 on Gaussian sections of FWHM 1.5 F (0.54
    expected), 0.07 on slab sections (0.07), 0.00 with Poisson noise, 0.01 with detector noise of 8 grey levels,
    0.00 on point sections. Taking all noise as acquisition noise made the simulated z spectrum too rich in high
    frequencies behind thick profiles, and the fit put more blur than there was on Gaussian sections (F = 4,
    FWHM 1.5 F: fitted 1.66 F on the development volume, 1.74 F on the report volume; then 1.52 F and 1.59 F, now
    1.52 F on both, the report volume's with lines along y; docs/benchmarks.md).
    """

    def __init__(self, data, factor: float, *, crop: int = 256, planes: int = 16) -> None:
        if getattr(data, "ndim", 0) != 3:
            raise InputError(
                f"the section profile is estimated from a 3D stack, got {getattr(data, 'ndim', '?')}D data")
        self.factor = factor
        nz, ny, nx = data.shape
        lat = int(min(max(crop, int(round(crop * factor / 4))), 1024))
        cy, cx = min(ny, lat), min(nx, lat)
        y0, x0 = (ny - cy) // 2, (nx - cx) // 2
        zc = min(crop, cy, cx)
        zy0, zx0 = (ny - zc) // 2, (nx - zc) // 2

        zs = np.unique(np.linspace(0, nz - 1, min(nz, planes)).round().astype(int))
        lateral = as_float32(data[[int(z) for z in zs], y0 : y0 + cy, x0 : x0 + cx])
        axial = as_float32(data[: min(nz, 256), zy0 : zy0 + zc, zx0 : zx0 + zc])
        if not (np.isfinite(lateral).all() and np.isfinite(axial).all()):
            raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) first")
        lo, hi = np.percentile(lateral, [0.5, 99.5])
        scale = float(hi - lo) if hi > lo else 1.0
        lateral = (lateral - lo) / scale
        axial = (axial - lo) / scale
        self.lo, self.scale = float(lo), scale
        self.sigma = float(np.median([noise_sigma(p) for p in lateral]))
        self.length = int(min(axial.shape[0], cy // factor, cx // factor, 32))
        shortest = MIN_SHORT_SPECTRUM_LENGTH if zc * zc >= SHORT_SPECTRUM_LINES else MIN_SPECTRUM_LENGTH
        if factor <= 1.0 or self.length < shortest:
            self.length = 0
            return
        self.sizes = (cy, cx)
        self.p_axial = _line_spectrum(np.moveaxis(axial, 0, -1), self.length)
        # Lateral lines along y and along x, in Fourier space once; each profile filters them there. ``noise_share``:
        # the share of their power at each frequency that is the sections' white noise (sigma^2 in every bin).
        self.lateral_ft = [np.fft.rfft(np.moveaxis(lateral, ax, -1), axis=-1) for ax in (1, 2)]
        self.noise_share = [
            np.clip(self.sigma**2 / np.maximum((np.abs(ft) ** 2).reshape(-1, ft.shape[-1]).mean(axis=0) / n, 1e-12),
                    0.0, 1.0)
            for ft, n in zip(self.lateral_ft, self.sizes)]
        self.correlation = section_correlation(axial)

    @classmethod
    def of(cls, data, factor: float, axis: int = 0, **kwargs) -> _SpectrumMatch:
        """The matcher of a stack whose anisotropic axis is ``axis`` (F checked)."""
        factor = check_factor(factor)
        if getattr(data, "ndim", 0) == 3 and axis != 0:
            data = to_front(data, axis)
        return cls(data, factor, **kwargs)

    @property
    def why_not(self) -> str:
        """Why the spectra cannot be compared (when ``length`` is 0)."""
        if self.factor <= 1.0:
            return "no anisotropy"
        return (f"too few sections or lateral samples to compare spectra (fewer than {MIN_SPECTRUM_LENGTH}, or "
                f"{MIN_SHORT_SPECTRUM_LENGTH} on a lateral crop of 128 x 128 or more)")

    def simulated(self, profile) -> np.ndarray:
        """Power spectrum of lateral lines degraded with ``profile`` (a name or a (thickness, softness) pair)."""
        return self.simulated_axes(profile).mean(axis=0)

    def simulated_axes(self, profile) -> np.ndarray:
        """:meth:`simulated` for lines along y and along x apart (2, length): their mean is :meth:`simulated`."""
        factor = self.factor
        kern = profile_kernel(profile, factor)
        kept = 1.0 if kern is None else float((kern**2).sum())
        expected = _noise_correlation(kern, factor)
        # NOTE: a floor under the expected correlation, so that profiles narrower than F (none expected) take the
        # split the measured correlation shows instead of jumping to all imaged noise
        imaged = float(np.clip(self.correlation / max(expected, NOISE_CORRELATION_FLOOR), 0.0, 1.0))
        per_axis = []
        for ft, n, noise in zip(self.lateral_ft, self.sizes, self.noise_share):
            spectra = []
            projection = _projection_gain(n, profile, factor)
            # each frequency's power becomes the tissue's (through the projection correction) plus the imaged
            # noise's (scaled back to its level before the profile averaged it); the acquisition noise's power is
            # taken out here and added after sampling, white along z (below): it is added to each section after
            # cutting, whatever the profile
            gain = (1.0 - noise) * projection + noise * imaged / kept
            filt = (_transfer(np.fft.rfftfreq(n), profile, factor) * np.sqrt(gain)).astype(np.float32)
            lines = np.fft.irfft(ft * filt, n=n, axis=-1)
            # NOTE: at most 4 sampling phases (evenly spread): the spectra barely differ between phases, and the
            # profile fit evaluates this some 80 times
            for phase in np.unique(np.linspace(0, int(math.ceil(factor)) - 1, min(4, int(math.ceil(factor))))
                                   .round().astype(int)):
                pos = phase + np.arange(int((n - 1 - phase) // factor) + 1) * factor
                i0 = np.floor(pos).astype(int)
                fr = (pos - i0).astype(np.float32)
                i1 = np.minimum(i0 + 1, n - 1)
                spectra.append(_line_spectrum(lines[..., i0] * (1 - fr) + lines[..., i1] * fr, self.length))
            per_axis.append(np.mean(spectra, axis=0))
        return np.stack(per_axis) + (1.0 - imaged) * self.sigma**2

    def distance(self, profile) -> float:
        """Log-spectral distance between the stack's z axis and lateral lines degraded with ``profile``."""
        return self._distance(self.simulated(profile))

    def distances(self, profile) -> dict[str, float]:
        """:meth:`distance` with each choice of lateral lines as the model of z (:data:`LATERAL_LINES`): lines along
        y and x together, along y only, along x only."""
        per_axis = self.simulated_axes(profile)
        return {"yx": self._distance(per_axis.mean(axis=0)), "y": self._distance(per_axis[0]),
                "x": self._distance(per_axis[1])}

    def distance_of(self, lr: np.ndarray) -> float:
        """Log-spectral distance between the stack's z axis and given LR planes (K, m, W), rows every F (as a
        learned degradation makes them; in the 0-1 range of the stack). NaN when they have too few rows."""
        if not self.length or lr.shape[1] < self.length:
            return float("nan")
        return self._distance(_line_spectrum(np.moveaxis(lr, 1, -1), self.length))

    def _distance(self, p_sim: np.ndarray) -> float:
        d = np.log(self.p_axial[1:] + 1e-12) - np.log(p_sim[1:] + 1e-12)
        return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


#: The grid :func:`fit_profile` searches: section thickness and edge softness, in units of F.
FIT_THICKNESS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
FIT_SOFTNESS = (0.0, 0.1, 0.2, 0.35, 0.55, 0.8)
#: Point sampling within this fraction of the best fit's distance is not told apart from it. Measured, not tuned: on
#: independent lateral halves of one stack (medulla z 0:125, F = 4 and 8, point and slab) the distance of point
#: sampling relative to a 0.25 F slab moves by -9 % to +15 %, typically 4-5 %; a thick profile's lead over point
#: (20-40 %) is far outside it.
FIT_TOLERANCE = 0.05
#: The lateral lines :func:`fit_profile` may take as the model of z: along y and x together, along y only, along x
#: only. Tissue is isotropic, its image need not be: the two lateral axes of a FIB-SEM volume can differ in
#: sharpness (scan direction, astigmatism), and z (milling) may resemble one of them more than their mean.
LATERAL_LINES = ("yx", "y", "x")
#: One lateral axis is taken alone only when its best fit is closer than the best with both axes by this fraction:
#: the largest change of a distance measured between independent lateral halves of one stack (see
#: :data:`FIT_TOLERANCE`: -9 % to +15 %, at F = 4 and 8 on 125 slices), so that chance does not pick an axis. Spectra
#: shorter than :data:`MIN_SPECTRUM_LENGTH` bins are rougher than that: they keep both axes.
LINES_MARGIN = 0.15
#: Lateral planes the fit reads (half the three-way estimate's: the fit evaluates some 80 candidates).
FIT_PLANES = 8


@dataclass
class ProfileFit:
    """What :func:`fit_profile` found: the continuous section profile closest to the stack's z spectrum.

    Attributes
    ----------
    thickness, softness : float
        Slab width and Gaussian edge (standard deviation), in units of the section spacing F.
    distance : float
        Log-spectral distance of the fit (lower is closer); ``named`` gives the three named profiles' distances.
    fwhm : float
        Full width at half maximum of the fitted kernel, in units of F (0 for point sampling).
    noise_sigma : float
        Lateral noise level of the normalised stack.
    reliable : bool
        False when the stack was too small to tell (then the fit is point sampling).
    note : str
        One line for people.
    noise_correlation : float
        Correlation of neighbouring sections' fine residuals; over what a candidate profile gives averaged noise,
        the share of the noise that profile averaged (:class:`_SpectrumMatch`). NaN when not fitted.
    lateral_lines : str
        The lateral lines z was matched to (:data:`LATERAL_LINES`): ``"yx"`` both, ``"y"`` or ``"x"`` one axis.
    """

    thickness: float
    softness: float
    distance: float
    named: dict[str, float]
    fwhm: float
    noise_sigma: float
    reliable: bool
    note: str
    noise_correlation: float = float("nan")
    lateral_lines: str = "yx"

    @property
    def profile(self) -> tuple[float, float]:
        return (self.thickness, self.softness)

    @property
    def label(self) -> str:
        """What ``auto`` stands for, short (the panel's profile box, the sections comparison): ``point`` or
        ``slab T F, edges S F``."""
        if self.thickness == self.softness == 0.0:
            return "point"
        return f"slab {self.thickness:.2f} F, edges {self.softness:.2f} F"

    def as_dict(self) -> dict:
        return {"profile": "fitted", "label": self.label, "thickness": self.thickness, "softness": self.softness,
                "distance": self.distance,
                "named": dict(self.named), "fwhm": self.fwhm, "noise_sigma": self.noise_sigma,
                "reliable": self.reliable, "note": self.note, "noise_correlation": self.noise_correlation,
                "lateral_lines": self.lateral_lines}


def kernel_fwhm(thickness: float, softness: float) -> float:
    """Full width at half maximum of a profile of the continuous family, in units of F (0 for point sampling)."""
    if softness == 0:
        return float(thickness)
    u = np.linspace(-(thickness / 2 + 4 * softness), thickness / 2 + 4 * softness, 4001)
    c = _soft_slab(u, thickness, softness)
    above = u[c >= 0.5 * c.max()]
    return float(above[-1] - above[0])


def fit_profile(data, factor: float, axis: int = 0, *, crop: int = 256, planes: int = FIT_PLANES) -> ProfileFit:
    """Fit the section profile continuously: thickness and edge softness (in units of F) of a slab with Gaussian
    edges, the pair whose degraded lateral lines have the spectrum closest to the stack's z axis.

    Unlike :func:`estimate_profile` there is no choice among three shapes and no margin: a thin slab, a slab with
    a Gaussian tail or a Gaussian wider than F are fitted as what they are. The search is a grid
    (:data:`FIT_THICKNESS` x :data:`FIT_SOFTNESS`) refined around the best point. Point sampling is kept when its
    distance is within :data:`FIT_TOLERANCE` of the best (the spectra cannot tell it apart from a thin section);
    otherwise, among fits within 1 % of the best, the one with the least blur (smallest second moment), since
    assuming more blur than the stack has costs more than assuming less.

    The degraded lines are those along y and x together, unless lines along one axis alone fit the z spectrum
    better by more than :data:`LINES_MARGIN` and their fit assumes no more blur (second moment) than the fit with
    both axes (:data:`LATERAL_LINES`; ``lateral_lines`` says which, the note why).
    """
    m = _SpectrumMatch.of(data, factor, axis, crop=crop, planes=planes)
    factor = m.factor
    if not m.length:
        return ProfileFit(0.0, 0.0, float("nan"), {}, 0.0, m.sigma, False, f"point sampling (not fitted: {m.why_not})")
    cache: dict[tuple[float, float], dict[str, float]] = {}

    def key_of(t: float, s: float) -> tuple[float, float]:
        return (round(max(t, 0.0), 3), round(max(s, 0.0), 3))

    def dists(t: float, s: float) -> dict[str, float]:
        key = key_of(t, s)
        if key not in cache:
            cache[key] = m.distances(key)
        return cache[key]

    for t in FIT_THICKNESS:
        for s in FIT_SOFTNESS:
            dists(t, s)
    # refine around the best grid point, for each choice of lateral lines (each searches the grid and its own
    # refinement, so that with lines along y and x the fit is the one it was before the choice existed)
    grid = list(cache)
    searched = {}
    for lines in LATERAL_LINES:
        keys = dict.fromkeys(grid)
        for dt, ds in ((0.1, 0.05), (0.1, 0.05), (0.05, 0.025)):
            t0, s0 = min(keys, key=lambda k, lines=lines: cache[k][lines])
            for t in (t0 - dt, t0, t0 + dt):
                for s in (s0 - ds, s0, s0 + ds):
                    dists(float(t), float(s))
                    keys[key_of(float(t), float(s))] = None
        searched[lines] = list(keys)
    best_of = {lines: min(cache[k][lines] for k in searched[lines]) for lines in LATERAL_LINES}

    def second_moment(key):
        k = section_kernel(key[0], key[1], factor)
        if k is None:
            return 0.0
        x = np.arange(len(k)) - len(k) // 2
        return float((k * x**2).sum())

    def pick(lines: str) -> tuple[float, float]:
        best = best_of[lines]
        if cache[(0.0, 0.0)][lines] <= best * (1.0 + FIT_TOLERANCE):  # point sampling is as good: keep it simple
            return (0.0, 0.0)
        near = [k for k in searched[lines] if cache[k][lines] <= best * 1.01 + 1e-9]
        return min(near, key=second_moment)

    # which lateral lines z is matched to: y and x together, unless one axis alone fits clearly better (and the
    # stack has sections enough to tell) and assumes no more blur than both axes do (which axis z resembles is
    # not known for sure, and assuming more blur than the stack has costs more than assuming less)
    single = min(("y", "x"), key=best_of.__getitem__)
    lines, (t, s) = "yx", pick("yx")
    refused = ""
    if best_of[single] < best_of["yx"] * (1.0 - LINES_MARGIN) and m.length >= MIN_SPECTRUM_LENGTH:
        alone = pick(single)
        if second_moment(alone) <= second_moment((t, s)):
            lines, (t, s) = single, alone
        else:
            refused = (f"; lines along {single} alone were closer, {best_of[single]:.3f} vs {best_of['yx']:.3f}, "
                       "but fitted more blur")
    named = {p: round(m.distances(p)[lines], 4) for p in BLUR_ORDER}
    fwhm = kernel_fwhm(t, s)
    against = {"yx": f"lateral lines along y and x{refused}",
               "y": f"lateral lines along y (closer than y and x together: {best_of['y']:.3f} vs {best_of['yx']:.3f})",
               "x": f"lateral lines along x (closer than y and x together: {best_of['x']:.3f} vs {best_of['yx']:.3f})"}
    note = (f"a slab of {t:.2f} F with Gaussian edges of {s:.2f} F (FWHM {fwhm:.2f} F), fitted to the stack's z "
            f"spectrum against {against[lines]} (distance {cache[(t, s)][lines]:.3f}; point {named['point']:.3f}, "
            f"slab {named['slab']:.3f}, gaussian {named['gaussian']:.3f}; noise correlated between sections "
            f"{m.correlation:.2f})")
    return ProfileFit(t, s, round(cache[(t, s)][lines], 4), named, round(fwhm, 3), m.sigma, True, note,
                      round(m.correlation, 3), lines)
