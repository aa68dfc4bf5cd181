"""Image quality measures: PSNR, SSIM, Fourier ring correlation and a reference-free anisotropy score.

All functions take numpy or dask arrays (dask arrays are computed, so pass crops of huge volumes) and
use numpy, scipy and scikit-image only. This module never imports torch, napari or Qt.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from napari_emsr.errors import InputError
from napari_emsr.geometry import lateral_axes, phase_bins

__all__ = ["anisotropy", "frc", "frc_resolution", "plane_frc", "psnr", "section_banding", "spectral_match", "ssim"]

log = logging.getLogger(__name__)

_PLANE_AXIS = {"xy": 0, "xz": 1, "yz": 2}


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "data") and hasattr(a, "spacing") and not isinstance(a, np.ndarray):
        a = a.data  # napari_emsr.io.Volume
    if hasattr(a, "compute") and not isinstance(a, np.ndarray):
        a = a.compute()
    return np.asarray(a)


def _check_pair(reference: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = _as_numpy(reference)
    tst = _as_numpy(test)
    if ref.shape != tst.shape:
        raise InputError(
            f"reference shape {ref.shape} and test shape {tst.shape} differ: compare volumes on the same grid "
            "(crop or resample one of them first)"
        )
    if ref.size == 0:
        raise InputError("the images are empty: give non-empty arrays")
    for name, arr in (("reference", ref), ("test", tst)):
        if arr.dtype.kind not in "uifb":
            raise InputError(f"the {name} has data type {arr.dtype}, not numbers: give real-valued images")
    return ref, tst


def _data_range(ref: np.ndarray, data_range: float | None) -> float:
    """Dynamic range: given, the dtype range for integers, else max - min of the reference."""
    if data_range is not None:
        value = float(data_range)
    elif ref.dtype.kind in "ui":
        info = np.iinfo(ref.dtype)
        value = float(info.max) - float(info.min)
    elif ref.dtype.kind == "b":
        value = 1.0
    else:
        value = float(np.nanmax(ref)) - float(np.nanmin(ref))
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"data range {value} is not positive (a constant float reference?): pass data_range explicitly"
        )
    return value


def psnr(reference: Any, test: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference``, in dB.

    Parameters
    ----------
    reference, test : array-like
        Arrays of the same shape (any number of dimensions).
    data_range : float, optional
        Peak-to-peak range of the signal. Default: the dtype range for integer references
        (255 for uint8, 65535 for uint16), else ``reference.max() - reference.min()``.

    Returns
    -------
    float
        ``10 log10(data_range**2 / MSE)``; ``inf`` for identical images.
    """
    ref, tst = _check_pair(reference, test)
    dr = _data_range(ref, data_range)
    mse = float(np.mean((ref.astype(np.float64) - tst.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * math.log10(dr * dr / mse))


def _ssim_nd(ref: np.ndarray, tst: np.ndarray, dr: float) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, *ref.shape)
    if win % 2 == 0:
        win -= 1
    if win < 3:
        raise InputError(
            f"images of shape {ref.shape} are too small for SSIM: every axis needs at least 3 pixels"
        )
    return float(structural_similarity(ref, tst, data_range=dr, win_size=win))


def ssim(reference: Any, test: Any, data_range: float | None = None, planes: str | None = None) -> float:
    """Structural similarity (scikit-image, 7-pixel uniform window) of ``test`` against ``reference``.

    Parameters
    ----------
    reference, test : array-like
        Arrays of the same shape: 2D images or (z, y, x) volumes.
    data_range : float, optional
        As in :func:`psnr`.
    planes : {None, "xy", "xz", "yz"}
        None: one SSIM over the whole array (3D SSIM for a volume). ``"xz"``: the mean of the 2D SSIM
        of every xz plane (slices along axis 1), ``"yz"``: along axis 2, ``"xy"``: along axis 0.

    Returns
    -------
    float
        SSIM in [-1, 1]; 1 for identical images.
    """
    ref, tst = _check_pair(reference, test)
    dr = _data_range(ref, data_range)
    ref = ref.astype(np.float64)
    tst = tst.astype(np.float64)
    if planes is None:
        return _ssim_nd(ref, tst, dr)
    if planes not in _PLANE_AXIS:
        raise InputError(f"planes={planes!r} is not known: use None, 'xy', 'xz' or 'yz'")
    if ref.ndim != 3:
        raise InputError(f"planes={planes!r} needs (z, y, x) volumes, got shape {ref.shape}")
    axis = _PLANE_AXIS[planes]
    values = [
        _ssim_nd(np.take(ref, i, axis=axis), np.take(tst, i, axis=axis), dr) for i in range(ref.shape[axis])
    ]
    return float(np.mean(values))


# --------------------------------------------------------------------------------------------------
# Fourier ring correlation
# --------------------------------------------------------------------------------------------------


def _tukey(n: int, alpha: float = 0.5) -> np.ndarray:
    from scipy.signal import windows

    return windows.tukey(n, alpha=alpha, sym=False) if n > 2 else np.ones(n)


def frc(image_a: Any, image_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two 2D images of the same scene.

    Each image is mean-subtracted and apodised with a separable Tukey window (alpha 0.5) before the
    Fourier transform; rings are one frequency step (``1 / min(shape)``) wide.

    Parameters
    ----------
    image_a, image_b : array-like
        2D images of the same shape (e.g. two independent acquisitions, or reconstruction and truth).

    Returns
    -------
    frequencies : numpy.ndarray
        Ring centre frequencies in cycles/pixel, from 0 to 0.5.
    values : numpy.ndarray
        FRC per ring, in [-1, 1]; rings without power in either image get 0.
    """
    a, b = _check_pair(image_a, image_b)
    if a.ndim != 2:
        raise InputError(f"FRC needs 2D images, got shape {a.shape}: pass a single plane")
    if min(a.shape) < 8:
        raise InputError(f"images of shape {a.shape} are too small for FRC: give at least 8 x 8 pixels")
    ny, nx = a.shape
    window = np.outer(_tukey(ny), _tukey(nx))
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    step = 1.0 / min(ny, nx)
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    ring = np.rint(np.sqrt(ky**2 + kx**2) / step).astype(np.int64)
    nbins = min(ny, nx) // 2 + 1
    keep = ring < nbins
    ring = ring[keep]
    cross = np.bincount(ring, (fa * np.conj(fb)).real[keep], minlength=nbins)
    pa = np.bincount(ring, (np.abs(fa) ** 2)[keep], minlength=nbins)
    pb = np.bincount(ring, (np.abs(fb) ** 2)[keep], minlength=nbins)
    denom = np.sqrt(pa * pb)
    values = np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
    freqs = np.arange(nbins) * step
    return freqs, np.clip(values, -1.0, 1.0)


def frc_resolution(image_a: Any, image_b: Any, threshold: float = 1 / 7) -> float:
    """Spatial frequency at which the FRC of two images first falls below ``threshold``.

    Parameters
    ----------
    image_a, image_b : array-like
        2D images of the same shape.
    threshold : float
        FRC threshold; the fixed 1/7 criterion by default.

    Returns
    -------
    float
        Frequency in cycles/pixel (linearly interpolated between rings); 0.5 when the FRC stays above
        the threshold up to Nyquist. The resolution in pixels is ``1 / value``.
    """
    freqs, values = frc(image_a, image_b)
    below = np.nonzero(values[1:] < threshold)[0]
    if below.size == 0:
        return 0.5
    i = int(below[0]) + 1
    v0, v1 = values[i - 1], values[i]
    t = (v0 - threshold) / (v0 - v1) if v0 != v1 else 0.0
    return float(freqs[i - 1] + np.clip(t, 0.0, 1.0) * (freqs[i] - freqs[i - 1]))


# --------------------------------------------------------------------------------------------------
# Reference-free anisotropy
# --------------------------------------------------------------------------------------------------


def _line_spectrum(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean power spectrum of 1D lines (rows of ``lines``): mean-subtracted, Hann-windowed.

    Normalised so that white noise of variance s**2 gives s**2 at every frequency, whatever the
    line length: spectra along different axes can be compared level for level.
    """
    from scipy.signal import windows

    n = lines.shape[1]
    x = lines - lines.mean(axis=1, keepdims=True)
    w = windows.hann(n, sym=False)
    spec = np.abs(np.fft.rfft(x * w, axis=1)) ** 2
    return np.fft.rfftfreq(n), spec.mean(axis=0) / float(np.sum(w**2))


def _crossing(freqs: np.ndarray, power: np.ndarray, level: float) -> tuple[float, bool]:
    """First frequency (above the lowest bin) where ``power`` drops below ``level``; (0.5, True) if never."""
    below = np.nonzero(power[1:] < level)[0]
    if below.size == 0:
        return 0.5, True
    i = int(below[0]) + 1
    p0, p1 = max(power[i - 1], 1e-300), max(power[i], 1e-300)
    lo, hi = math.log(p0), math.log(p1)
    t = (lo - math.log(level)) / (lo - hi) if lo != hi else 0.0
    return float(freqs[i - 1] + np.clip(t, 0.0, 1.0) * (freqs[i] - freqs[i - 1])), False


def anisotropy(
    volume: Any,
    axis: int = 0,
    sample: int = 8,
    rng: Any = 0,
    spacing: Any = None,
    *,
    max_extent: int = 512,
    snr: float = 1.0,
) -> dict:
    """Reference-free estimate of how far a volume's resolution along ``axis`` is from the lateral one.

    Recipe. ``sample`` planes perpendicular to ``axis`` (random positions) give lines along the two
    lateral axes; ``sample`` planes containing ``axis`` and each lateral axis give lines along
    ``axis``. For each axis the power spectrum is averaged over all its lines (mean-subtracted,
    Hann-windowed, normalised so that white noise has the same level on every axis). The noise floor
    N is the median lateral power in the top band (0.4-0.5 cycles/pixel). The *cut-off* of an axis is
    the first frequency at which its spectrum falls to ``(1 + snr) * N``, i.e. where the signal power
    along that axis drops to ``snr`` times the noise power; it is the Nyquist frequency 0.5
    cycles/pixel when the spectrum stays above that level (the axis is then limited by its sampling).
    Cut-offs are converted to cycles per physical unit by dividing by the voxel size.

    Parameters
    ----------
    volume : array-like or Volume
        (z, y, x) numpy or dask array; only the sampled planes are read. A
        :class:`napari_emsr.io.Volume` supplies its own voxel size when ``spacing`` is None.
    axis : int
        The axial (possibly anisotropic) axis.
    sample : int
        Planes sampled per orientation.
    rng : int or numpy.random.Generator
        Seed or generator for the plane positions (results are reproducible for a given seed).
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x). Without it the voxels are taken as cubes (1, 1, 1), which is right for a
        reconstructed isotropic volume but NOT for an anisotropic stack as stored: give its spacing,
        or the fewer, thicker z voxels look as sharp as the lateral ones.
    max_extent : int
        Planes are cropped to a random window of at most this many pixels per axis.
    snr : float
        Signal-to-noise power ratio that defines the cut-off (1: signal power equals noise power).

    Returns
    -------
    dict
        ``ratio``: lateral cut-off / axial cut-off in physical frequency; about 1 for an isotropic
        volume, larger when the axial resolution is worse (for a stack with F-times thicker
        sections it is at most about F: the axial cut-off cannot exceed its Nyquist frequency
        ``1 / (2 F dx)``). ``axial_cutoff`` and ``lateral_cutoff`` (mean of the two lateral axes) in
        cycles per ``unit``; ``cutoffs`` per axis (z, y, x) in cycles/unit and ``cutoffs_px`` in
        cycles/pixel; ``axial_at_nyquist``: True when the axial spectrum never reached the threshold
        (its resolution is limited by the sampling, the ratio is then a sampling figure);
        ``noise_floor``; ``unit`` ("pixel" without spacing); ``method``.
    """
    vol = volume
    unit = "pixel"
    if hasattr(vol, "spacing") and hasattr(vol, "data") and not isinstance(vol, np.ndarray):
        if spacing is None and vol.spacing is not None:
            spacing, unit = vol.spacing, getattr(vol, "unit", "nm")
        vol = vol.data
    if spacing is not None:
        try:
            spacing = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            raise InputError(f"spacing {spacing!r} is not three numbers (z, y, x)") from None
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"spacing {spacing!r} must be three positive numbers (z, y, x)")
        if unit == "pixel":
            unit = "unit of spacing"
    else:
        spacing = (1.0, 1.0, 1.0)
    if not hasattr(vol, "ndim"):
        vol = np.asarray(vol)
    if vol.ndim != 3:
        raise InputError(f"anisotropy needs a 3D volume (z, y, x), got shape {tuple(vol.shape)}")
    if np.dtype(vol.dtype).kind not in "uif":
        raise InputError(f"anisotropy needs numeric data, got {vol.dtype}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise InputError(f"axis {axis} is not an axis of a 3D volume: give 0, 1 or 2")
    axis = axis % 3
    if min(vol.shape) < 8:
        raise InputError(
            f"volume of shape {tuple(vol.shape)} is too small to measure anisotropy: every axis needs at "
            "least 8 voxels"
        )
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lateral = list(lateral_axes(axis))
    shape = tuple(int(s) for s in vol.shape)

    def planes(fixed: int) -> np.ndarray:
        n = min(int(sample), shape[fixed])
        idx = np.sort(gen.choice(shape[fixed], size=n, replace=False))
        index: list[Any] = []
        for a in range(3):
            if a == fixed:
                index.append(idx.tolist())
            elif shape[a] > max_extent:
                start = int(gen.integers(0, shape[a] - max_extent + 1))
                index.append(slice(start, start + max_extent))
            else:
                index.append(slice(None))
        # Read the selected planes with one fancy index per call (one pass over a lazy array).
        block = vol[index[0]][:, index[1]][:, :, index[2]]
        return np.moveaxis(_as_numpy(block).astype(np.float64), fixed, 0)

    def lines_along(stack: np.ndarray, fixed: int, along: int) -> np.ndarray:
        # stack is (n, a1, a2) with a1 < a2 the remaining axes in order.
        rest = [a for a in range(3) if a != fixed]
        arr = np.moveaxis(stack, 1 + rest.index(along), -1)
        return arr.reshape(-1, arr.shape[-1])

    spectra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    perp = planes(axis)
    for a in lateral:
        spectra[a] = _line_spectrum(lines_along(perp, axis, a))
    axial_lines = [lines_along(planes(b), b, axis) for b in lateral]
    spectra[axis] = _line_spectrum(np.concatenate(axial_lines, axis=0))

    floor = float(np.mean([np.median(p[f >= 0.4]) for f, p in (spectra[a] for a in lateral)]))
    if not floor > 0:
        raise InputError("the volume has no texture (constant planes): anisotropy cannot be measured")
    level = (1.0 + float(snr)) * floor
    cut_px = [0.0, 0.0, 0.0]
    at_nyq = [False, False, False]
    for a in range(3):
        cut_px[a], at_nyq[a] = _crossing(*spectra[a], level)
    cut = [c / s for c, s in zip(cut_px, spacing)]
    lateral_cut = float(np.mean([cut[a] for a in lateral]))
    axial_cut = float(cut[axis])
    result = {
        "ratio": lateral_cut / axial_cut if axial_cut > 0 else float("inf"),
        "axial_cutoff": axial_cut,
        "lateral_cutoff": lateral_cut,
        "cutoffs": tuple(float(c) for c in cut),
        "cutoffs_px": tuple(float(c) for c in cut_px),
        "axial_at_nyquist": bool(at_nyq[axis]),
        "noise_floor": floor,
        "unit": unit,
        "axis": axis,
        "method": (
            f"line power spectra; cut-off where signal power = {snr:g} x lateral noise floor "
            "(median power at 0.4-0.5 cycles/pixel); ratio = mean lateral / axial cut-off in cycles per unit"
        ),
    }
    log.debug("anisotropy: %s", result)
    return result


def section_banding(volume: Any, factor: float, axis: int = 0, phase: float = 0.0) -> dict:
    """Reference-free check that a reconstruction has the same lateral detail between sections as at them.

    A reconstruction of a stack cut every ``factor`` planes can reproduce its sections sharply and leave the
    planes between them blurred: the volume then bands with the section period, a defect PSNR averages away
    and that a spectral anisotropy measure even rewards (the bands are axial detail). Each plane
    perpendicular to ``axis`` gets its lateral detail, the mean absolute difference between neighbouring
    pixels along both lateral axes; planes are grouped by their position between sections, ``(z - phase)
    mod factor``, in ``ceil(factor)`` bins; the result compares the bins.

    Parameters
    ----------
    volume : array-like
        The reconstruction on the fine grid (z, y, x); numpy or dask.
    factor : float
        The section spacing in planes of ``volume`` (the anisotropy factor F).
    axis : int
        The axial axis.
    phase : float
        Position of the first section (0 for the output of :func:`napari_emsr.reconstruct.reconstruct`).

    Returns
    -------
    dict
        ``ratio``: least / most detailed bin (1: no banding; an isotropic volume gives about 1, a volume whose
        planes between sections lost their detail much less); ``by_phase``: the mean detail of each bin,
        from the sections (bin 0) to the middle of the gap and back.
    """
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
        raise InputError(f"section_banding needs the factor F > 1 of the stack, got {factor!r}")
    a = _as_numpy(volume).astype(np.float32)
    if a.ndim != 3:
        raise InputError(f"section_banding needs a 3D volume, got shape {a.shape}")
    a = np.moveaxis(a, axis % 3, 0)
    if a.shape[0] < 2 * factor:
        raise InputError(f"section_banding needs at least two section periods along z: {a.shape[0]} < 2 x {factor}")
    detail = np.abs(np.diff(a, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(a, axis=2)).mean(axis=(1, 2))
    bins = math.ceil(factor)
    which = phase_bins(a.shape[0], factor, phase)
    by_phase = np.array([detail[which == b].mean() for b in range(bins)])
    top = float(by_phase.max())
    return {"ratio": float(by_phase.min() / top) if top > 0 else 1.0, "by_phase": by_phase.tolist()}


# --------------------------------------------------------------------------------------------------
# Bands and texture against the lateral planes
# --------------------------------------------------------------------------------------------------


def plane_frc(reference: Any, test: Any, planes: str = "xz", sample: int = 16, threshold: float = 1 / 7) -> dict:
    """Fourier ring correlation of a reconstruction with its ground truth, averaged over planes of one orientation.

    The planes ``xz`` (fixed y) or ``yz`` (fixed x) of a volume (z, y, x) hold the axis that was restored, so their
    FRC with the truth says up to which spatial frequency the restored detail is the real one (a blurred or a
    hallucinated texture both lose correlation there). ``sample`` planes evenly spread are compared with
    :func:`frc`; their curves are averaged.

    Returns
    -------
    dict
        ``frequencies`` and ``values`` (the mean curve), ``resolution``: where the mean curve first falls below
        ``threshold`` (cycles/pixel, 0.5 if never), and ``mean``: the mean FRC over rings above the lowest
        (0 to 1, higher is better; one number for tables).
    """
    ref, tst = _check_pair(reference, test)
    if ref.ndim != 3 or planes not in ("xz", "yz"):
        raise InputError(f"plane_frc needs 3D volumes and planes 'xz' or 'yz', got shape {ref.shape}, {planes!r}")
    ax = _PLANE_AXIS[planes]
    idx = np.unique(np.linspace(0, ref.shape[ax] - 1, min(int(sample), ref.shape[ax])).round().astype(int))
    curves = []
    for i in idx:
        a, b = np.take(ref, i, axis=ax).astype(np.float64), np.take(tst, i, axis=ax).astype(np.float64)
        freqs, values = frc(a, b)
        curves.append(values)
    values = np.mean(curves, axis=0)
    below = np.nonzero(values[1:] < threshold)[0]
    if below.size == 0:
        res = 0.5
    else:
        i = int(below[0]) + 1
        v0, v1 = values[i - 1], values[i]
        t = (v0 - threshold) / (v0 - v1) if v0 != v1 else 0.0
        res = float(freqs[i - 1] + np.clip(t, 0.0, 1.0) * (freqs[i] - freqs[i - 1]))
    return {"frequencies": freqs, "values": values, "resolution": res, "mean": float(values[1:].mean())}


def spectral_match(volume: Any, axis: int = 0, band: tuple[float, float] = (0.05, 0.45), sample: int = 16) -> dict:
    """How well the power spectrum along the restored axis of an isotropic volume matches the lateral one.

    In an isotropic volume, lines along z have the spectrum of lines along x and y. A reconstruction that regresses
    to the mean between sections has too little power along z at high frequencies; one that bands has peaks at the
    section frequency and its harmonics; an invented texture can have too much. Mean power spectra of lines along
    ``axis`` (from xz and yz planes) and along the lateral axes (from the same planes) are compared frequency by
    frequency in ``band`` (cycles/pixel): the log ratio axial / lateral, in dB.

    Parameters
    ----------
    volume : array-like
        An isotropic volume (z, y, x): a reconstruction on the fine grid, or a ground truth.
    axis : int
        The restored (formerly anisotropic) axis.
    band : (float, float)
        Frequencies compared, cycles/pixel.
    sample : int
        Planes of each orientation used.

    Returns
    -------
    dict
        ``ratio_db``: mean of 10 log10(axial / lateral power) over the band (0 for a perfect match, negative when
        z is too smooth); ``rms_db``: root mean square of that log ratio (0 for a match; it also sees bands, whose
        peaks and troughs a mean can cancel); ``frequencies``, ``axial`` and ``lateral`` spectra. A real volume
        is not exactly isotropic: compare with the ground truth's figures where there is one.
    """
    a = _as_numpy(volume).astype(np.float64)
    if a.ndim != 3:
        raise InputError(f"spectral_match needs a 3D volume, got shape {a.shape}")
    a = np.moveaxis(a, axis % 3, 0)
    nz, ny, nx = a.shape
    n = min(nz, ny, nx)
    if n < 16:
        raise InputError(f"spectral_match needs at least 16 voxels along every axis, got {a.shape}")
    axial_lines, lateral_lines = [], []
    for plane_axis, length in ((1, ny), (2, nx)):
        for i in np.unique(np.linspace(0, length - 1, min(sample, length)).round().astype(int)):
            p = np.take(a, i, axis=plane_axis)[:n, :n]  # (z, lateral), square: the same frequency grid
            axial_lines.append(p.T)  # rows: lines along z
            lateral_lines.append(p)  # rows: lines along the lateral axis
    freqs, pa = _line_spectrum(np.concatenate(axial_lines))
    _, pl = _line_spectrum(np.concatenate(lateral_lines))
    keep = (freqs >= band[0]) & (freqs <= band[1])
    if not keep.any() or not (pl[keep] > 0).all():
        raise InputError("the volume has no texture in the compared band: spectral match cannot be measured")
    ratio = 10 * np.log10(np.maximum(pa[keep], 1e-300) / pl[keep])
    rms = float(np.sqrt(np.mean(ratio**2)))
    return {"ratio_db": float(ratio.mean()), "rms_db": rms, "frequencies": freqs, "axial": pa, "lateral": pl}
