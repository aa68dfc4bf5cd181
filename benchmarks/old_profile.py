"""The three-way section-profile estimate that ``auto`` used before the continuous fit
(:func:`napari_emsr.profile_fit.fit_profile`) replaced it; kept with the benchmarks that compare the two
(``bench_profile.py``, ``bench_degradation.py --methods old-auto``)."""

from __future__ import annotations

from dataclasses import dataclass

from napari_emsr.profile_fit import BLUR_ORDER, _SpectrumMatch

#: A more blurred profile must beat a less blurred one by this ratio of spectral distances to be chosen.
PREFER_LESS_BLUR = 0.9


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
