"""Real held-out sections as the judge: a quality measure on the user's own stack, without ground truth.

A stack's sections are real axial samples. Every other section is held out; the remaining ones (at twice the
spacing, 2F) are restored by the method being judged, and what the restoration predicts at the held-out
positions is scored against the real held-out sections:

- interpolation (cubic) predicts a section directly, by interpolating the kept sections;
- a network restores the tissue between the kept sections; a real section integrates the tissue over its profile,
  so the restoration is blurred along z by the section profile it was trained for, then sampled at the held-out
  position. This is cross-validation of the whole forward model (profile and restorer): a profile that is too thick
  or too thin predicts the held-out sections worse, which lateral validation (that shares the training's profile)
  cannot see.

The real sections carry the stack's noise, which no restorer can predict: scored against them, a restorer that
removes noise would look no better than cubic interpolation that passes it on. Both errors are therefore measured
against the noise-free sections, estimated: the held-out sections' own white-noise variance (Immerkaer's
estimator) is subtracted from each mean squared error. That is exact in expectation, because a held-out section's
noise is independent of the kept sections the prediction is made from.

The gain in dB over cubic on the held-out sections (:class:`HeldoutScore`) is measured at the coarser spacing 2F
and cannot see how much a thick section is sharpened (the prediction is blurred before it is compared), so alone
it under-reads thick-section stacks. :func:`estimate` blends it with the model's gain on lateral planes degraded
like z (which sees the sharpening but over-reads) into a calibrated estimate of the gain at F
(:class:`QualityEstimate`; ``benchmarks/bench_heldout.py`` fits and checks the calibration).

Nothing here imports torch until a network is trained or applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .degrade import GAUSSIAN_SOFTNESS, profile_kernel
from .errors import InputError
from .interpolation import interpolate_axis

#: At most this many pixels per lateral side are used (a central crop): the measure costs seconds, not minutes.
CROP = 192
#: Fewest sections a stack needs for the measure: 3 held out between 4 kept.
MIN_SECTIONS = 7
#: A noise-corrected squared error is kept at least this share of the measured one: the noise estimate reads fine
#: texture as noise too, and without a floor a near-perfect prediction would score an unbounded gain.
MSE_FLOOR = 0.05


@dataclass(frozen=True)
class HeldoutScore:
    """How well the held-out real sections are predicted from the others (at twice the section spacing).

    Attributes
    ----------
    gain_db : float
        PSNR of the restorer's prediction minus PSNR of cubic interpolation's (dB): > 0 means better than cubic.
    psnr, cubic_psnr : float
        PSNR (dB) of each prediction against the real held-out sections.
        Both against the noise-free held-out sections (their estimated noise variance taken off each error).
    sections : int
        Number of held-out sections scored.
    factor : float
        The spacing they were restored at (twice the stack's factor).
    noise_sigma : float
        The held-out sections' estimated white-noise standard deviation (intensity units), taken off the errors.
    raw_gain_db : float
        The gain measured against the noisy sections as they are (no correction).
    noise_share : float
        The share of cubic interpolation's squared error against the noisy sections that is their noise: 0 for
        none, at most about 0.6 (cubic passes the kept sections' noise on too).
    """

    gain_db: float
    psnr: float
    cubic_psnr: float
    sections: int
    factor: float
    noise_sigma: float = 0.0
    raw_gain_db: float = float("nan")
    noise_share: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        """For ``--json``: ``{"gain_db", "psnr", "cubic_psnr", "sections", "factor", "noise_sigma",
        "raw_gain_db", "noise_share"}``, dB rounded to 0.01."""
        return {"gain_db": round(self.gain_db, 2), "psnr": round(self.psnr, 2),
                "cubic_psnr": round(self.cubic_psnr, 2), "sections": self.sections,
                "factor": round(self.factor, 3), "noise_sigma": round(self.noise_sigma, 3),
                "raw_gain_db": round(self.raw_gain_db, 2), "noise_share": round(self.noise_share, 3)}


def coarse_profile(profile: Any) -> Any:
    """The same physical section profile in units of twice the section spacing (a (thickness, softness) pair,
    or ``"point"``): a slab of F is half of 2F."""
    if isinstance(profile, (tuple, list)):
        t, s = float(profile[0]), float(profile[1])
    elif profile == "point":
        return "point"
    elif profile == "slab":
        t, s = 1.0, 0.0
    elif profile == "gaussian":
        t, s = 0.0, GAUSSIAN_SOFTNESS
    else:
        raise InputError(f"cannot judge the section profile {profile!r} on held-out sections: give point, slab, "
                         "gaussian or a (thickness, softness) pair")
    return (t / 2.0, s / 2.0)


def split_sections(data: Any, axis: int = 0, crop: int | None = CROP) -> tuple[np.ndarray, np.ndarray]:
    """The kept sections (even indices) and the held-out ones (odd indices that lie between two kept ones) of a
    central lateral crop, as float32 arrays with the section axis first.

    Raises
    ------
    InputError
        When the stack has fewer than :data:`MIN_SECTIONS` sections.
    """
    from .geometry import to_front

    arr = to_front(data, axis)
    n = int(arr.shape[0])
    if n < MIN_SECTIONS:
        raise InputError(f"the stack has {n} sections; judging a restoration on held-out sections needs at least "
                         f"{MIN_SECTIONS} (every other one is held out)")
    if crop:
        ny, nx = int(arr.shape[1]), int(arr.shape[2])
        cy, cx = min(ny, crop), min(nx, crop)
        y0, x0 = (ny - cy) // 2, (nx - cx) // 2
        arr = arr[:, y0:y0 + cy, x0:x0 + cx]
    a = np.asarray(arr.compute() if hasattr(arr, "compute") else arr, dtype=np.float32)
    kept = a[0::2]
    held = a[1::2][: len(kept) - 1]
    return kept, held


def _mse(ref: np.ndarray, test: np.ndarray) -> float:
    return float(np.mean((ref.astype(np.float64) - test.astype(np.float64)) ** 2))


def _psnr(ref: np.ndarray, test: np.ndarray, data_range: float, noise_var: float = 0.0,
          mse: float | None = None) -> float:
    """PSNR of ``test`` against ``ref`` (or of the squared error ``mse`` already measured); ``noise_var`` (the
    variance of ``ref``'s own noise, independent of ``test``) is taken off the squared error, down to
    :data:`MSE_FLOOR` of it."""
    mse = _mse(ref, test) if mse is None else float(mse)
    mse = max(mse - float(noise_var), MSE_FLOOR * mse)
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def noise_variance(planes: np.ndarray) -> float:
    """Mean white-noise variance of 2D planes stacked along the first axis (Immerkaer's estimator, plane by plane)."""
    from .profile_fit import noise_sigma

    return float(np.mean([noise_sigma(p) ** 2 for p in np.asarray(planes)]))


def score_prediction(held: np.ndarray, prediction: np.ndarray, kept: np.ndarray,
                     noise_var: float | None = None) -> HeldoutScore:
    """Score ``prediction`` of the held-out sections against them, beside cubic interpolation of ``kept``.

    ``held`` and ``prediction`` are (m, y, x) with ``m = len(kept) - 1``: held-out section ``j`` lies halfway
    between kept sections ``j`` and ``j + 1``. ``noise_var`` is the held-out sections' noise variance, taken off
    both errors (default: estimated from them, :func:`noise_variance`; 0 scores against the noisy sections as they
    are).
    """
    m = len(held)
    cubic = interpolate_axis(kept, np.arange(m) + 0.5, order=3, axis=0)
    lo, hi = np.percentile(held, [0.1, 99.9])
    dr = float(max(hi - lo, 1e-6))
    nv = noise_variance(held) if noise_var is None else float(noise_var)
    pred_mse, cubic_mse = _mse(held, prediction), _mse(held, cubic)
    p, c = _psnr(held, prediction, dr, nv, pred_mse), _psnr(held, cubic, dr, nv, cubic_mse)
    raw = _psnr(held, prediction, dr, mse=pred_mse) - _psnr(held, cubic, dr, mse=cubic_mse)
    share = min(1.0, nv / cubic_mse) if cubic_mse > 0 and math.isfinite(nv) else 0.0
    return HeldoutScore(gain_db=p - c, psnr=p, cubic_psnr=c, sections=m, factor=float("nan"),
                        noise_sigma=math.sqrt(nv), raw_gain_db=raw, noise_share=share)


def predict_from_restored(restored: np.ndarray, m: int, factor: float, profile: Any) -> np.ndarray:
    """The held-out sections a restoration predicts: ``restored`` is the kept sections restored on the isotropic
    grid (kept section ``i`` at z = ``i * 2F``); blurred along z by the section ``profile`` (in units of F, the
    stack's own spacing) and sampled at the held-out positions ``(2j + 1) * F``."""
    from scipy import ndimage

    k = profile_kernel(profile, factor)
    r = np.asarray(restored, dtype=np.float32)
    if k is not None:
        r = ndimage.convolve1d(r, k, axis=0, mode="mirror")
    pos = (2 * np.arange(m) + 1) * float(factor)
    return interpolate_axis(r, pos, order=1, axis=0)


def heldout_score(kept: np.ndarray, held: np.ndarray, factor: float, model: Any = None, profile: Any = "point",
                  *, spacing: float = 1.0, device: str = "auto") -> HeldoutScore:
    """Score a restorer of the kept sections (at 2F) on the held-out ones.

    Parameters
    ----------
    kept, held : ndarray
        From :func:`split_sections`.
    factor : float
        The stack's factor F (the kept sections are 2F apart).
    model : EMSRModel, optional
        A model trained for the factor 2F (see :func:`train_judge`); None scores cubic against itself (gain 0).
    profile : str or (thickness, softness)
        The section profile at F that the model assumes (the prediction is blurred by it).
    """
    m = len(held)
    if model is None:
        pred = interpolate_axis(kept, np.arange(m) + 0.5, order=3, axis=0)
    else:
        from .io import as_volume
        from .reconstruct import reconstruct

        vol = as_volume(kept, spacing=(2.0 * factor * spacing, spacing, spacing))
        restored = np.asarray(reconstruct(vol, model, planes="xz", deband=False, device=device).compute(),
                              dtype=np.float32)
        pred = predict_from_restored(restored, m, factor, profile)
    s = score_prediction(held, pred, kept)
    return HeldoutScore(s.gain_db, s.psnr, s.cubic_psnr, s.sections, 2.0 * float(factor), s.noise_sigma,
                        s.raw_gain_db, s.noise_share)


def train_judge(kept: np.ndarray, factor: float, profile: Any, *, steps: int, options: dict | None = None,
                **config: Any):
    """Train the isotropic method on the kept sections at 2F with ``profile`` (given at F): the model that
    :func:`heldout_score` judges. ``config`` goes to :class:`napari_emsr.train.TrainConfig` (net, size, patch,
    batch, seed, device, threads ...)."""
    from .io import as_volume
    from .train import TrainConfig, train

    cp = coarse_profile(profile)
    opts = dict(options or {})
    if cp == "point":
        opts["profile"] = "point"
    else:
        opts.update(profile="fitted", thickness=cp[0], softness=cp[1])
    vol = as_volume(kept, spacing=(2.0 * factor, 1.0, 1.0))
    cfg = TrainConfig(factor=2.0 * factor, steps=steps, options=opts, val_every=max(steps, 1), **config)
    return train(vol, cfg)


def judge_profiles(data: Any, factor: float, profiles: dict[str, Any], *, steps: int, axis: int = 0,
                   crop: int | None = CROP, **config: Any) -> dict[str, HeldoutScore]:
    """Train one short judge per candidate section profile and score each on the real held-out sections.

    Returns ``{name: HeldoutScore}`` in the order given; the best profile has the highest ``gain_db``.
    """
    kept, held = split_sections(data, axis=axis, crop=crop)
    out = {}
    for name, profile in profiles.items():
        model = train_judge(kept, factor, profile, steps=steps, **config)
        out[name] = heldout_score(kept, held, factor, model, profile, device=config.get("device", "auto"))
    return out


#: Steps of the judge that :func:`estimate` trains when none are given (at most the model's own).
JUDGE_STEPS = 400


def model_profile(config: dict) -> Any:
    """The section profile a model was trained for, as :func:`train_judge` takes it (None when the model has none
    that held-out sections can judge: a learned or mixed degradation, or a method without sections)."""
    opts = config.get("options") or {}
    profile = opts.get("profile")
    if profile == "fitted":
        return (float(opts.get("thickness") or 0.0), float(opts.get("softness") or 0.0))
    if profile in ("point", "slab", "gaussian"):
        return profile
    return None


def lateral_gains(model: Any, planes: np.ndarray, spacing: float, factor: float, profile: Any,
                  *, device: str = "auto", noise_var: float | None = None) -> tuple[float, float]:
    """A restorer's gain over cubic on lateral planes degraded the way z was cut, scored two ways.

    Each lateral plane's y axis stands in for z: it is blurred by the section ``profile`` (given in units of the
    stack's factor ``factor``), sampled every ``spacing`` pixels (``factor`` for the model itself, ``2 * factor``
    for a judge) and restored by ``model`` (its xz path). Returns ``(unblurred, blurred)``: the gain in dB against
    the planes themselves (what the restoration is for), and the gain with the restoration blurred by the profile
    against the blurred planes (how :func:`heldout_score` scores real sections; cubic is scored as it is).

    The planes carry the stack's noise (variance ``noise_var``, default :func:`noise_variance` of ``planes``), and
    so do the real sections; the profile's blur averages some of it away, so the sampled rows get that share back
    as fresh white noise (what the training's ``noise auto`` does), or the restorer and cubic would be judged on
    inputs cleaner than the stack's. The unblurred gain is scored on the rows between the sampled ones, against
    the noise-free planes (the noise variance taken off each error): a sampled row shares its noise with the
    input, a row between does not. The blurred gain is scored on every row as it is.
    """
    from scipy import ndimage

    from .io import as_volume
    from .reconstruct import reconstruct

    step = int(round(spacing))
    v = np.ascontiguousarray(np.moveaxis(np.asarray(planes, np.float32), 1, 0))  # (y as z, plane, x)
    k = profile_kernel(profile, factor)
    blurred = ndimage.convolve1d(v, k, axis=0, mode="mirror") if k is not None else v
    nv = noise_variance(planes) if noise_var is None else float(noise_var)
    sampled = blurred[::step]
    averaged = 1.0 - float(np.sum(np.square(k))) if k is not None else 0.0
    if nv > 0 and averaged > 0:
        rng = np.random.default_rng(0)
        sampled = sampled + rng.normal(0.0, math.sqrt(nv * averaged), sampled.shape).astype(np.float32)
    nz = (len(sampled) - 1) * step + 1
    vol = as_volume(sampled, spacing=(float(step), 1.0, 1.0))
    restored = np.asarray(reconstruct(vol, model, planes="xz", deband=False, device=device).compute(),
                          np.float32)[:nz]
    cubic = interpolate_axis(sampled, np.arange(nz) / float(step), order=3, axis=0)
    reblurred = ndimage.convolve1d(restored, k, axis=0, mode="mirror") if k is not None else restored
    lo, hi = np.percentile(v, [0.1, 99.9])
    dr = float(max(hi - lo, 1e-6))
    truth, truth_b = v[:nz], blurred[:nz]
    between = np.arange(nz) % step != 0 if step > 1 else np.ones(nz, bool)
    t, r, c = truth[between], restored[between], cubic[between]
    off = nv if step > 1 else 0.0
    return (_psnr(t, r, dr, off) - _psnr(t, c, dr, off),
            _psnr(truth_b, reblurred, dr) - _psnr(truth_b, cubic, dr))


#: Lateral planes (sections of the stack) that :func:`estimate` degrades for its lateral term.
LATERAL_PLANES = 8
#: The calibration of :func:`estimate`: ``gain = SECTIONS_WEIGHT * sections + LATERAL_WEIGHT * lateral``, fitted by
#: least squares on the development volume only (``benchmarks/bench_heldout.py --calibrate``, which prints the fit
#: and its residuals); the report volume checks it.
SECTIONS_WEIGHT = 0.06
LATERAL_WEIGHT = 0.62
#: A stack is *noisy* for the estimate when its noise makes up at least this share of cubic interpolation's error
#: on the held-out sections (:attr:`QualityEstimate.noise_share`). Measured (``bench_heldout.py``): 0.00-0.05 on
#: the medulla's point, slab, Gaussian and tail stacks, 0.22-0.53 with Poisson noise of 40-120 photons at mid grey.
NOISY_SHARE = 0.15
#: How far the estimate was off on noisy stacks, either way: at most 1.75 dB on the development volume (point, slab
#: and Gaussian sections with Poisson noise, F = 4 and 8, 4,000 steps; 1.77 dB in 10-minute runs; 1.16 dB on the
#: report volume's 10-minute rows). Said beside every estimate on a noisy stack (:attr:`QualityEstimate.error_db`).
NOISY_ERROR_DB = 1.8
#: ... and on stacks with little noise: at most 0.39 dB on the development volume's calibration rows (0.43 dB in
#: 10-minute runs), 0.79 dB on the report volume's 10-minute rows (the README table). Said beside every estimate on
#: such a stack.
QUIET_ERROR_DB = 0.8


def lateral_planes(kept: np.ndarray) -> np.ndarray:
    """The :data:`LATERAL_PLANES` kept sections, evenly spread, that :func:`estimate` degrades for its lateral term."""
    return kept[np.unique(np.linspace(0, len(kept) - 1, LATERAL_PLANES).round().astype(int))]


def combine(sections_db: float, lateral_db: float) -> float:
    """The estimated gain over cubic at F from the held-out sections' and the lateral planes' gains (see
    :class:`QualityEstimate`; the judge's lateral gain is reported beside it, not used: it did not help on the
    report volume, docs/benchmarks.md)."""
    return SECTIONS_WEIGHT * sections_db + LATERAL_WEIGHT * lateral_db


@dataclass(frozen=True)
class QualityEstimate:
    """The gain over cubic interpolation a trained model reaches on the user's stack, estimated without ground
    truth (:func:`estimate`).

    Two figures, each wrong in its own way, are combined. Real held-out sections are honest but measured at 2F and
    blind to how much a thick section is sharpened (a real section is blurred by its profile, so the judge's
    restoration is blurred before it is compared). Lateral planes degraded like z see the sharpening but share the
    training's assumptions, and overstate the gain. The estimate weighs both (:data:`SECTIONS_WEIGHT`,
    :data:`LATERAL_WEIGHT`: a calibration on a volume with ground truth).

    Attributes
    ----------
    gain_db : float
        The estimate, dB over cubic at the stack's factor.
    sections_db : float
        A judge's gain over cubic on the real held-out sections (the same method trained at 2F on every other
        section).
    lateral_db : float
        The model's gain over cubic on the stack's lateral planes degraded like z (at F).
    sections : int
        Number of real held-out sections scored.
    factor : float
        The stack's factor F (the judge works at 2F).
    judge_lateral_db : float
        The judge's gain on the same lateral planes degraded like z at 2F and scored as the held-out sections are
        (its restoration blurred by the profile): what ``sections_db`` would be if the real sections were cut the
        way the model assumes.
    noise_sigma : float
        The held-out sections' estimated white-noise standard deviation (intensity units): ``sections_db`` and
        ``lateral_db`` are scored against the noise-free sections and planes, this much noise taken off.
    sections_raw_db : float
        ``sections_db`` scored against the noisy sections as they are.
    noise_share : float
        The share of cubic interpolation's error on the held-out sections that is the stack's noise; from
        :data:`NOISY_SHARE` up the stack is noisy and the estimate less certain (:attr:`caveat`).
    """

    gain_db: float
    sections_db: float
    lateral_db: float
    sections: int
    factor: float
    judge_lateral_db: float = float("nan")
    noise_sigma: float = 0.0
    sections_raw_db: float = float("nan")
    noise_share: float = 0.0

    @property
    def noisy(self) -> bool:
        """Whether the stack's noise makes up :data:`NOISY_SHARE` or more of cubic's error on held-out sections."""
        return self.noise_share >= NOISY_SHARE

    @property
    def error_db(self) -> float:
        """How far off the estimate was, either way, on test stacks like this one (with ground truth): at most
        :data:`NOISY_ERROR_DB` on noisy stacks, :data:`QUIET_ERROR_DB` on the others. Said beside the estimate."""
        return NOISY_ERROR_DB if self.noisy else QUIET_ERROR_DB

    @property
    def caveat(self) -> str:
        """What to say beside the estimate on a noisy stack (empty otherwise)."""
        if not self.noisy:
            return ""
        return (f"noisy stack: noise is {100 * self.noise_share:.0f} % of cubic interpolation's squared error on the "
                f"held-out sections; the estimate is least certain on such stacks (off by up to {NOISY_ERROR_DB:.1f} "
                f"dB on noisy test stacks, {QUIET_ERROR_DB:.1f} dB on the others)")

    def as_dict(self) -> dict[str, float | int]:
        """For ``--json`` (dB rounded to 0.01)."""
        return {"gain_db": round(self.gain_db, 2), "sections_gain_db": round(self.sections_db, 2),
                "lateral_gain_db": round(self.lateral_db, 2),
                "judge_lateral_gain_db": round(self.judge_lateral_db, 2), "sections": self.sections,
                "factor": round(self.factor, 3), "judged_at": round(2 * self.factor, 3),
                "noise_sigma": round(self.noise_sigma, 3), "sections_raw_gain_db": round(self.sections_raw_db, 2),
                "noise_share": round(self.noise_share, 3), "noisy": self.noisy,
                "error_db": self.error_db}


def estimate(volume: Any, model: Any, *, steps: int | None = None, device: str = "auto",
             threads: int | None = None) -> QualityEstimate:
    """The estimated gain over cubic of a trained model on its stack (:class:`QualityEstimate`): a judge with the
    model's settings (network, size, patch, batch, section profile and noise) is trained on the stack's kept
    sections at 2F for ``steps`` (default :data:`JUDGE_STEPS`, at most the model's own steps) and scored on the
    real held-out sections; the model itself is scored on the stack's lateral planes degraded like z.

    Raises
    ------
    InputError
        For a model whose degradation held-out sections cannot judge (learned, mixed, none), or a stack of
        fewer than :data:`MIN_SECTIONS` sections.
    """
    data = getattr(volume, "data", volume)
    model, _ = model.for_stack(data)  # a stack of another bit depth or scaling: the model in its own range
    c = model.config
    profile = model_profile(c)
    if profile is None:
        raise InputError("held-out sections judge a model trained with a fixed or fitted section profile; this one "
                         f"has {(c.get('options') or {}).get('profile')!r}")
    train = c.get("train") or {}
    opts = {k: v for k, v in (c.get("options") or {}).items() if k in ("noise", "noise_level", "pdl_weight")}
    if steps is None:
        steps = max(1, min(JUDGE_STEPS, int(c.get("step") or JUDGE_STEPS)))
    kept, held = split_sections(data, axis=int(c.get("axis", 0)))
    factor = float(c["factor"])
    judge = train_judge(kept, factor, profile, steps=int(steps), options=opts, net=c.get("net"), size=c.get("size"),
                        patch=train.get("patch"), batch=train.get("batch"), lr=train.get("lr"),
                        seed=int(train.get("seed") or 0), device=device, threads=threads)
    on_sections = heldout_score(kept, held, factor, judge, profile, device=device)
    planes = lateral_planes(kept)
    nv = noise_variance(planes)
    lateral, _ = lateral_gains(model, planes, factor, factor, profile, device=device, noise_var=nv)
    _, judge_lateral = lateral_gains(judge, planes, 2.0 * factor, factor, profile, device=device, noise_var=nv)
    gain = combine(on_sections.gain_db, lateral)
    return QualityEstimate(gain, on_sections.gain_db, lateral, on_sections.sections, factor, judge_lateral,
                           on_sections.noise_sigma, on_sections.raw_gain_db, on_sections.noise_share)
