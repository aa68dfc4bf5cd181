"""Axial degradation and interpolation along one axis: the geometry every method shares.

Geometry (DESIGN.md, contract): input slice ``i`` lies at output position ``i * F``; output slice 0 coincides
with input slice 0; the output has ``output_length(n, F)`` slices and reaches at least the last input slice.

The same interpolation (:func:`interpolate_axis`) makes the network's input at training time (from a lateral
patch degraded along one axis) and at reconstruction time (from the real axial planes), so the network sees at
inference exactly the kind of input it was trained on. Numpy only: this module does not import torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .geometry import check_factor, to_front

PROFILES = ("point", "slab", "gaussian")
NOISES = ("none", "gaussian", "poisson-gaussian")
ORDERS = {"linear": 1, "cubic": 3}

PROFILE_DESCRIPTIONS = {
    "point": "each section is a thin sample of the tissue (every F-th plane)",
    "slab": "each section integrates the tissue over its thickness F (serial sections, block-face)",
    "gaussian": "each section is a Gaussian-weighted average, FWHM = F (a soft slab)",
    "auto": "estimated from the stack: its z spectrum is compared with lateral lines degraded each way",
    "mixed": "training only: each pair draws point, gaussian or slab at random (robust when the profile is unknown)",
}


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into [0, n) by whole-sample symmetric mirroring (scipy's ``mirror`` mode)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    m1 = t < 1
    m2 = (t >= 1) & (t < 2)
    out[m1] = 2.0 / 3.0 - t[m1] ** 2 + 0.5 * t[m1] ** 3
    out[m2] = (2.0 - t[m2]) ** 3 / 6.0
    return out


def _taps(positions: np.ndarray, n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (mirrored into [0, n)) and weights of the B-spline of ``order`` at ``positions``."""
    positions = np.asarray(positions, dtype=np.float64)
    if order == 1:
        base = np.floor(positions)
        offs = np.arange(0, 2)
        idx = base[:, None] + offs[None, :]
        w = 1.0 - np.abs(positions[:, None] - idx)
    elif order == 3:
        base = np.floor(positions) - 1
        offs = np.arange(0, 4)
        idx = base[:, None] + offs[None, :]
        w = _bspline3(positions[:, None] - idx)
    else:
        raise ValueError(f"order must be 1 or 3, got {order}")
    return _mirror(idx.astype(np.int64), n), w


def interpolate_axis(data: np.ndarray, positions: np.ndarray, order: int = 3, axis: int = 0) -> np.ndarray:
    """Interpolate ``data`` along ``axis`` at fractional ``positions`` (in sample units).

    B-spline interpolation with mirror boundaries, identical to ``scipy.ndimage.map_coordinates`` with
    ``mode="mirror"`` along that axis, but separable and cheap: a prefilter along the axis, then a few taps
    per output sample. Returns float32.
    """
    a = np.moveaxis(np.asarray(data, dtype=np.float32), axis, 0)
    n = a.shape[0]
    if order == 3 and n > 1:
        a = ndimage.spline_filter1d(a, order=3, axis=0, mode="mirror", output=np.float32)
    idx, w = _taps(positions, n, order)
    w = w.astype(np.float32)
    out = np.zeros((len(positions),) + a.shape[1:], dtype=np.float32)
    shape = (len(positions),) + (1,) * (a.ndim - 1)
    for k in range(idx.shape[1]):
        out += w[:, k].reshape(shape) * a[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def interpolation_matrix(n: int, positions: np.ndarray, order: int = 3) -> np.ndarray:
    """The (len(positions), n) matrix M with ``interpolate_axis(x, positions) == M @ x`` (float32)."""
    return interpolate_axis(np.eye(n, dtype=np.float32), positions, order=order, axis=0)


def _soft_slab(u: np.ndarray, t: float, s: float) -> np.ndarray:
    """The continuous profile (not normalised) at positions ``u``: a slab of width ``t`` convolved with a Gaussian
    of standard deviation ``s > 0`` (a Gaussian when ``t`` is 0), all in the same units."""
    if t < 1e-3:
        return np.exp(-0.5 * (u / s) ** 2)
    from scipy.special import erf

    return erf((u + t / 2.0) / (s * math.sqrt(2.0))) - erf((u - t / 2.0) / (s * math.sqrt(2.0)))


def section_kernel(thickness: float, softness: float, factor: float) -> np.ndarray | None:
    """A section profile of the continuous family: a slab of ``thickness * F`` with Gaussian edges of standard
    deviation ``softness * F`` (both in units of the section spacing F), integrated over each lateral pixel.

    ``(0, 0)`` is point sampling (None), ``(1, 0)`` the slab profile, ``(0, 0.425)`` about the Gaussian one
    (FWHM = F); everything between (a thin slab, a slab with soft edges, a wide Gaussian) is one more point of
    the same two-parameter family, which :func:`fit_profile` fits to the stack.
    """
    t, s = float(thickness) * factor, float(softness) * factor
    if not (math.isfinite(t) and math.isfinite(s)) or t < 0 or s < 0:
        raise InputError(f"a section thickness and softness must be non-negative numbers, got {thickness}, {softness}")
    if factor <= 1.0 or (t < 0.05 and s < 0.05):
        return None
    r = max(1, int(math.ceil(t / 2.0 + 3.0 * s - 0.5)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    if s < 1e-3:  # a sharp slab: each pixel's exact overlap with it
        w = np.clip(np.minimum(x + 0.5, t / 2.0) - np.maximum(x - 0.5, -t / 2.0), 0.0, None)
    else:  # the continuous profile averaged over each pixel (midpoints of 32 sub-pixels: symmetric)
        sub = 32
        u = x[:, None] - 0.5 + (np.arange(sub) + 0.5)[None, :] / sub
        w = _soft_slab(u, t, s).mean(axis=1)
    if w.sum() <= 0:
        return None
    return (w / w.sum()).astype(np.float32)


def profile_kernel(profile, factor: float) -> np.ndarray | None:
    """1D section profile (normalised kernel, odd length, centred) for a factor; None for a point profile.

    ``profile`` is a name of :data:`PROFILES` or a ``(thickness, softness)`` pair of :func:`section_kernel`.
    """
    if isinstance(profile, (tuple, list)):
        return section_kernel(profile[0], profile[1], factor)
    if profile == "point" or factor <= 1.0:
        return None
    if profile == "slab":
        # A box of width F centred on the kept sample; fractional ends get partial weight.
        half = factor / 2.0
        r = int(math.ceil(half - 0.5 + 1e-9))
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    elif profile == "gaussian":
        sigma = factor / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        r = max(1, int(math.ceil(3 * sigma)))
        x = np.arange(-r, r + 1, dtype=np.float64)
        w = np.exp(-0.5 * (x / sigma) ** 2)
    else:
        raise InputError(f"unknown section profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return (w / w.sum()).astype(np.float32)


def section_blur(data: np.ndarray, profile: str, factor: float, axis: int = 0) -> np.ndarray:
    """Blur ``data`` along ``axis`` with the section profile (what a physical section integrates)."""
    k = profile_kernel(profile, factor)
    data = np.asarray(data, dtype=np.float32)
    if k is None:
        return data
    return ndimage.convolve1d(data, k, axis=axis, mode="mirror")


def add_noise(lr: np.ndarray, noise: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add acquisition noise to normalised samples: ``gaussian`` (sigma = level) or ``poisson-gaussian``."""
    if noise in (None, "none") or level <= 0:
        return lr
    if noise == "gaussian":
        return lr + rng.normal(0.0, level, lr.shape).astype(np.float32)
    if noise == "poisson-gaussian":
        # Signal-dependent part: variance proportional to the (shifted, non-negative) intensity.
        sig = np.sqrt(np.clip(lr + 0.5, 0.0, None) * level * 0.5)
        return lr + (rng.normal(0.0, 1.0, lr.shape) * (sig + level * 0.5)).astype(np.float32)
    raise InputError(f"unknown noise model {noise!r}: choose one of {', '.join(NOISES)}")


def degrade_axis(
    hr: np.ndarray,
    factor: float,
    profile: str = "slab",
    *,
    phase: float = 0.0,
    order: int = 3,
    axis: int = 0,
    noise: str = "none",
    noise_level: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Simulate an axial acquisition along ``axis`` of a well-sampled array, then interpolate it back.

    The section profile blurs ``hr``; samples are taken at ``phase + i * factor`` (linear sampling between
    rows for a fractional position); optional noise is added; the samples are interpolated back onto every
    row with :func:`interpolate_axis` (``order``), exactly as a real stack is at reconstruction time.

    Returns an array of the shape of ``hr`` (float32): the network's input for the target ``hr``.
    """
    hr = np.moveaxis(np.asarray(hr, dtype=np.float32), axis, 0)
    n = hr.shape[0]
    blurred = section_blur(hr, profile, factor, axis=0)
    count = int(math.floor((n - 1 - phase) / factor + 1e-9)) + 1
    pos = phase + np.arange(count) * factor
    lr = interpolate_axis(blurred, pos, order=1, axis=0) if count > 0 else blurred[:0]
    if rng is None:
        rng = np.random.default_rng(0)
    lr = add_noise(lr, noise, noise_level, rng)
    back = interpolate_axis(lr, (np.arange(n) - phase) / factor, order=order, axis=0)
    return np.moveaxis(back, 0, axis)


def make_anisotropic(volume: np.ndarray, factor: int, profile: str = "point") -> np.ndarray:
    """Make an anisotropic stack from an isotropic volume: slice ``i`` sits at input z = ``i * factor``.

    For scoring: the kernel is centred on the kept slice (``../shared/data/README.md``). ``factor`` must be an
    integer here. Output dtype is the input's (rounded).
    """
    if int(factor) != factor or factor < 1:
        raise InputError(f"make_anisotropic needs an integer factor >= 1, got {factor}")
    factor = int(factor)
    v = np.asarray(volume)
    blurred = section_blur(v, profile, factor, axis=0)
    out = blurred[::factor]
    if np.issubdtype(v.dtype, np.integer):
        info = np.iinfo(v.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(v.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Estimating the section profile from the stack itself
# ---------------------------------------------------------------------------------------------------------------

#: Profiles ordered from least to most axial blur.
BLUR_ORDER = ("point", "slab", "gaussian")
#: A more blurred profile must beat a less blurred one by this ratio of spectral distances to be chosen:
#: assuming more blur than the stack has costs more than assuming less (medulla F = 4, 3 min CPU: a point stack
#: trained as slab lost 1 dB to cubic; a slab stack trained as point still gained 0.5 dB).
PREFER_LESS_BLUR = 0.9
#: The estimate needs this many sections (and as many F-spaced lateral samples) to resolve the spectra.
MIN_SPECTRUM_LENGTH = 12


@dataclass
class ProfileEstimate:
    """What :func:`estimate_profile` found.

    Attributes
    ----------
    profile : str
        The chosen section profile (one of :data:`PROFILES`).
    scores : dict
        Log-spectral distance between the stack's axial spectrum and each profile's simulation (lower is closer).
    noise_sigma : float
        Lateral noise level of the normalised stack (Immerkaer's estimator), used in the simulations.
    reliable : bool
        False when the stack was too small to tell (then ``profile`` is ``"point"``, the safe choice).
    note : str
        One line for people.
    """

    profile: str
    scores: dict[str, float]
    noise_sigma: float
    reliable: bool
    note: str

    def as_dict(self) -> dict:
        return {"profile": self.profile, "scores": dict(self.scores), "noise_sigma": self.noise_sigma,
                "reliable": self.reliable, "note": self.note}


def noise_sigma(plane: np.ndarray) -> float:
    """White-noise standard deviation of a 2D image (Immerkaer 1996: a Laplacian-difference mask)."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = ndimage.convolve(np.asarray(plane, np.float32), mask, mode="mirror")[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2.0) * np.abs(r).mean() / 6.0)


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


def as_float32(a) -> np.ndarray:
    """A numpy or dask array (or a lazy slice of one) read into memory as float32."""
    return np.asarray(a.compute() if hasattr(a, "compute") else a, dtype=np.float32)


class _SpectrumMatch:
    """The stack's spectrum along z, and lateral lines degraded by a candidate profile to compare with it.

    Tissue is statistically isotropic, so the power spectrum of lines along z should match that of lateral lines
    degraded the way z was acquired. For a candidate profile the lateral lines of a few planes are blurred with it
    (corrected for the projection the sections already carry, :func:`_projection_gain`), sampled every F pixels,
    given back the noise the blur removed, and their spectrum is compared with the spectrum along z (RMS of the
    log ratio with the mean removed: a free gain). ``length`` is 0 when the stack is too small to tell.
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
        if factor <= 1.0 or self.length < MIN_SPECTRUM_LENGTH:
            self.length = 0
            return
        self.sizes = (cy, cx)
        self.p_axial = _line_spectrum(np.moveaxis(axial, 0, -1), self.length)
        # Lateral lines along y and along x, in Fourier space once; each profile filters them there.
        self.lateral_ft = [np.fft.rfft(np.moveaxis(lateral, ax, -1), axis=-1) for ax in (1, 2)]

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
        return f"too few sections or lateral samples (< {MIN_SPECTRUM_LENGTH}) to compare spectra"

    def simulated(self, profile) -> np.ndarray:
        """Power spectrum of lateral lines degraded with ``profile`` (a name or a (thickness, softness) pair)."""
        factor = self.factor
        spectra = []
        filters: dict[int, np.ndarray] = {}
        for ft, n in zip(self.lateral_ft, self.sizes):
            if n not in filters:
                freq = np.fft.rfftfreq(n)
                filt = _transfer(freq, profile, factor) * np.sqrt(_projection_gain(n, profile, factor))
                filters[n] = filt.astype(np.float32)
            lines = np.fft.irfft(ft * filters[n], n=n, axis=-1)
            # NOTE: at most 4 sampling phases (evenly spread): the spectra barely differ between phases, and the
            # profile fit evaluates this some 80 times
            for phase in np.unique(np.linspace(0, int(math.ceil(factor)) - 1, min(4, int(math.ceil(factor))))
                                   .round().astype(int)):
                pos = phase + np.arange(int((n - 1 - phase) // factor) + 1) * factor
                i0 = np.floor(pos).astype(int)
                fr = (pos - i0).astype(np.float32)
                i1 = np.minimum(i0 + 1, n - 1)
                spectra.append(_line_spectrum(lines[..., i0] * (1 - fr) + lines[..., i1] * fr, self.length))
        kern = profile_kernel(profile, factor)
        kept = 1.0 if kern is None else float((kern**2).sum())
        return np.mean(spectra, axis=0) + self.sigma**2 * (1.0 - kept)

    def distance(self, profile) -> float:
        """Log-spectral distance between the stack's z axis and lateral lines degraded with ``profile``."""
        return self._distance(self.simulated(profile))

    def distance_of(self, lr: np.ndarray) -> float:
        """Log-spectral distance between the stack's z axis and given LR planes (K, m, W), rows every F (as a
        learned degradation makes them; in the 0-1 range of the stack). NaN when they have too few rows."""
        if not self.length or lr.shape[1] < self.length:
            return float("nan")
        return self._distance(_line_spectrum(np.moveaxis(lr, 1, -1), self.length))

    def _distance(self, p_sim: np.ndarray) -> float:
        d = np.log(self.p_axial[1:] + 1e-12) - np.log(p_sim[1:] + 1e-12)
        return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


def estimate_profile(data, factor: float, axis: int = 0, *, crop: int = 256, planes: int = 16) -> ProfileEstimate:
    """Estimate how the sections were cut (point, slab or Gaussian profile) from the stack alone.

    The stack's spectrum along z is compared with lateral lines degraded by each profile (:class:`_SpectrumMatch`).
    The closest profile wins; a more blurred profile must win by a margin (:data:`PREFER_LESS_BLUR`). On the medulla
    FIB-SEM cut at F = 4 and 8 (point, slab, Gaussian; with and without noise of 8 grey levels) it names the profile
    the stack was cut with in 11 of 12 cases; the miss (F = 8, slab, noisy) falls on the safe side, point
    (``benchmarks/bench_profile.py``). Stacks with fewer than :data:`MIN_SPECTRUM_LENGTH` sections get ``point``,
    marked not reliable. :func:`fit_profile` fits a continuous profile instead of picking one of three.

    Parameters
    ----------
    data : array-like (numpy or dask), 3D
        The anisotropic stack.
    factor : float
        Anisotropy factor F.
    axis : int
        The anisotropic axis.
    crop, planes : int
        Lateral crop (pixels) and number of lateral planes read (the estimate reads at most
        ``n_sections * crop**2 + planes * (crop * F)**2`` voxels).
    """
    m = _SpectrumMatch.of(data, factor, axis, crop=crop, planes=planes)
    if not m.length:
        return ProfileEstimate("point", {}, m.sigma, False, f"point (not estimated: {m.why_not})")
    scores = {profile: round(m.distance(profile), 4) for profile in BLUR_ORDER}
    best = min(scores, key=scores.get)
    choice = best
    for profile in BLUR_ORDER[: BLUR_ORDER.index(best)]:
        if scores[best] > PREFER_LESS_BLUR * scores[profile]:
            choice = profile
            break
    detail = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    return ProfileEstimate(choice, scores, m.sigma, True, f"{choice} (estimated from the stack's spectra: {detail})")


#: The grid :func:`fit_profile` searches: section thickness and edge softness, in units of F.
FIT_THICKNESS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
FIT_SOFTNESS = (0.0, 0.1, 0.2, 0.35, 0.55, 0.8)
#: Point sampling within this fraction of the best fit's distance is not told apart from it. Measured, not tuned: on
#: independent lateral halves of one stack (medulla z 0:125, F = 4 and 8, point and slab) the distance of point
#: sampling relative to a 0.25 F slab moves by -9 % to +15 %, typically 4-5 %; a thick profile's lead over point
#: (20-40 %) is far outside it.
FIT_TOLERANCE = 0.05
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
    """

    thickness: float
    softness: float
    distance: float
    named: dict[str, float]
    fwhm: float
    noise_sigma: float
    reliable: bool
    note: str

    @property
    def profile(self) -> tuple[float, float]:
        return (self.thickness, self.softness)

    def as_dict(self) -> dict:
        return {"profile": "fitted", "thickness": self.thickness, "softness": self.softness, "distance": self.distance,
                "named": dict(self.named), "fwhm": self.fwhm, "noise_sigma": self.noise_sigma,
                "reliable": self.reliable, "note": self.note}


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
    """
    m = _SpectrumMatch.of(data, factor, axis, crop=crop, planes=planes)
    factor = m.factor
    if not m.length:
        return ProfileFit(0.0, 0.0, float("nan"), {}, 0.0, m.sigma, False, f"point sampling (not fitted: {m.why_not})")
    named = {p: round(m.distance(p), 4) for p in BLUR_ORDER}
    cache: dict[tuple[float, float], float] = {}

    def dist(t: float, s: float) -> float:
        key = (round(max(t, 0.0), 3), round(max(s, 0.0), 3))
        if key not in cache:
            cache[key] = m.distance(key)
        return cache[key]

    for t in FIT_THICKNESS:
        for s in FIT_SOFTNESS:
            dist(t, s)
    # refine around the best grid point
    t0, s0 = min(cache, key=cache.get)
    for dt, ds in ((0.1, 0.05), (0.1, 0.05), (0.05, 0.025)):
        t0, s0 = min(cache, key=cache.get)
        for t in (t0 - dt, t0, t0 + dt):
            for s in (s0 - ds, s0, s0 + ds):
                dist(float(t), float(s))
    best = min(cache.values())

    def second_moment(key):
        k = section_kernel(key[0], key[1], factor)
        if k is None:
            return 0.0
        x = np.arange(len(k)) - len(k) // 2
        return float((k * x**2).sum())

    if dist(0.0, 0.0) <= best * (1.0 + FIT_TOLERANCE):  # point sampling is as good as any fit: keep it simple
        t, s = 0.0, 0.0
    else:
        near = [k for k, v in cache.items() if v <= best * 1.01 + 1e-9]
        t, s = min(near, key=second_moment)
    fwhm = kernel_fwhm(t, s)
    note = (f"a slab of {t:.2f} F with Gaussian edges of {s:.2f} F (FWHM {fwhm:.2f} F), fitted to the stack's z "
            f"spectrum (distance {cache[(t, s)]:.3f}; point {named['point']:.3f}, slab {named['slab']:.3f}, "
            f"gaussian {named['gaussian']:.3f})")
    return ProfileFit(t, s, round(cache[(t, s)], 4), named, round(fwhm, 3), m.sigma, True, note)
