"""The isotropic method's pair-maker (A2I-3DEM, Khateri et al.): lateral planes degraded the way z was cut.

Pairs: random lateral (xy) patches from random z, degraded along one lateral axis (y or x, both used) the way z
was acquired (section profile, sampling every F rows at a random phase, optional noise), interpolated back to
the patch size with exactly the interpolation used at reconstruction; the network learns the original patch.

The whole degradation is linear, so it is precomputed as two small matrices per sampling phase and applied to
a batch on the training device with two batched matmuls (no host work per step on a GPU).
Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ...degrade import PROFILES, profile_kernel, section_blur
from ...geometry import training_phases
from ...interpolation import interpolation_matrix
from ...profile_fit import fit_profile, noise_sigma
from .degradation import LearnedPairs

log = logging.getLogger(__name__)

#: Sampling phases per section profile in the precomputed degradation operators.
N_PHASES = 16
#: Held-out pairs scored at each validation.
N_VALIDATION = 16


def matched_noise(planes: np.ndarray, profile, factor: float) -> dict:
    """The noise to add to simulated sections so they are as noisy as the real ones.

    A real section carries the detector's noise at full strength, whatever its thickness; a section simulated by
    blurring a lateral plane with the profile's kernel ``h`` averages that plane's noise down to
    ``sigma * sqrt(sum h^2)``. Adding ``sigma * sqrt(1 - sum h^2)`` gives it back.
    A section that keeps most of its plane's own noise (point sampling: all of it) shares that noise with the
    target, so the network learns to copy each section's noise and to denoise only the planes between them: the
    result bands with the section period. Such sections get fresh noise of ``sigma * sqrt(sum h^2)`` instead
    (``sigma`` for point sampling), i.e. ``sigma * sqrt(max(1 - sum h^2, sum h^2))`` in general.
    ``sigma`` is the median white-noise level of ``planes`` (normalised intensities; Immerkaer's estimator).
    The effect on quality is measured by ``benchmarks/bench_quality.py --stack-noise``.
    """
    sigma = float(np.median([noise_sigma(p) for p in planes[:16]])) if len(planes) else 0.0
    profiles = list(PROFILES) if profile == "mixed" else [profile]
    kept = []
    for prof in profiles:
        k = profile_kernel(prof, factor)
        kept.append(1.0 if k is None else float((k.astype(np.float64) ** 2).sum()))
    own = float(np.mean(kept))  # the share of a plane's noise variance a simulated section keeps
    level = sigma * math.sqrt(min(1.0, max(1.0 - own, own)))
    name = profile if isinstance(profile, str) else "fitted"
    note = (f"noise {level:.4f} added to simulated {name} sections (lateral noise {sigma:.4f}, normalised)"
            if level > 0 else f"none added (the stack shows no noise: {sigma:.4f})")
    return {"level": round(level, 6), "sigma": round(sigma, 6), "note": note}


def degradation_ops(patch: int, factor: float, profile, order: int,
                    first_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-phase matrices (D: samples x patch, U: patch x samples), zero-padded to a common sample count.

    ``profile`` is a name of :data:`~napari_emsr.degrade.PROFILES`, ``"mixed"``, or a ``(thickness, softness)``
    pair of the continuous family (:func:`~napari_emsr.degrade.section_kernel`).

    ``first_row``: every patch starts with a section (the section-grid networks' geometry).

    ``profile="mixed"`` stacks the operators of every section profile (point, gaussian, slab), so each
    training pair draws its profile at random: a network that does not depend on knowing the profile.
    """
    profiles = list(PROFILES) if profile == "mixed" else [profile]
    # NOTE: phases are those real data has ((-o) mod F), not spread over [0, F): a fractional phase makes each
    # training sample a blend of two rows, a blur that real point-sampled sections do not have. A section-grid
    # network sees whole planes, whose row 0 is a section: phase 0 only (first_row).
    phases = np.zeros(N_PHASES) if first_row else training_phases(factor, N_PHASES)
    counts = [int(math.floor((patch - 1 - p) / factor + 1e-9)) + 1 for p in phases]
    cmax = max(counts)
    n = N_PHASES * len(profiles)
    D = np.zeros((n, cmax, patch), np.float32)
    U = np.zeros((n, patch, cmax), np.float32)
    for j, prof in enumerate(profiles):
        blur = section_blur(np.eye(patch, dtype=np.float32), prof, factor, axis=0)
        for i, (p, c) in enumerate(zip(phases, counts)):
            k = j * N_PHASES + i
            S = interpolation_matrix(patch, p + np.arange(c) * factor, order=1)
            D[k, :c] = S @ blur
            U[k, :, :c] = interpolation_matrix(c, (np.arange(patch) - p) / factor, order=order)
    return D, U


def resolve_sections(ctx, opts: dict, info: dict, notes: list[str]) -> tuple:
    """Replace ``auto`` / ``fitted`` without numbers by the profile fitted to the stack; returns the profile as
    the degradation takes it (a name, or a (thickness, softness) pair) and updates ``opts`` to what was chosen."""
    if opts["profile"] == "judged":
        return _judge_sections(ctx, opts, info, notes)
    if opts["profile"] in ("auto", "fitted"):
        if opts.get("thickness") is None or opts.get("softness") is None:
            fit = fit_profile(ctx.data, ctx.factor)
            info["profile_fit"] = fit.as_dict()
            notes.append(f"section profile: {fit.note}")
            log.info("section profile: %s", fit.note)
            if opts.get("thickness") is None:
                opts["thickness"] = fit.thickness
            if opts.get("softness") is None:
                opts["softness"] = fit.softness
        opts["profile"] = "fitted"
    if opts["profile"] == "fitted":
        return (float(opts["thickness"]), float(opts["softness"]))
    return opts["profile"]


def _judge_sections(ctx, opts: dict, info: dict, notes: list[str]) -> tuple:
    """``--profile judged``: the fitted profile and point sampling, each trained briefly on every other section (at
    2F) and judged on the real sections held out between them (:mod:`napari_emsr.heldout`); the one that predicts
    them better is used. When the fit is point sampling already, nothing is trained."""
    from ...heldout import judge_profiles

    fit = fit_profile(ctx.data, ctx.factor)
    info["profile_fit"] = fit.as_dict()
    candidates = {"point": (0.0, 0.0)}
    if fit.thickness > 0 or fit.softness > 0:
        candidates["fitted"] = (float(fit.thickness), float(fit.softness))
    choice = "point"
    if len(candidates) > 1:
        scores = judge_profiles(ctx.data, ctx.factor, candidates, steps=int(opts["judge_steps"]), patch=ctx.patch,
                                device=ctx.device, **ctx.train)
        choice = max(scores, key=lambda k: scores[k].gain_db)
        info["profile_judged"] = {k: v.as_dict() for k, v in scores.items()}
        said = ", ".join(f"{k} {v.gain_db:+.2f} dB" for k, v in scores.items())
        notes.append(f"section profile: {fit.note}; judged on held-out sections ({said} over cubic): {choice}")
    else:
        notes.append(f"section profile: {fit.note} (point sampling: nothing to judge)")
    log.info("%s", notes[-1])
    opts["thickness"], opts["softness"] = candidates[choice]
    opts["profile"] = "fitted"
    return candidates[choice]


class LateralPairs:
    """The A2I-3DEM pair-maker (Khateri et al.): a lateral patch and the same patch degraded along its rows like z.

    Resolves the ``auto`` options on the stack (section profile fitted by :func:`~napari_emsr.profile_fit.fit_profile`,
    noise by :func:`matched_noise`), precomputes the degradation operators on the training device and fixes
    the held-out validation pairs.
    """

    #: It makes pairs for section-grid networks too (every patch then starts with a section).
    section_grid = True

    def __init__(self, ctx) -> None:
        import torch

        self._torch = torch
        self.ctx = ctx
        opts = dict(ctx.options)
        info: dict = {"profile_fit": None, "noise_estimate": None}
        notes: list[str] = []
        profile = resolve_sections(ctx, opts, info, notes)
        if opts["noise"] == "auto":
            ne = matched_noise(ctx.pool.numpy(), profile, ctx.factor)
            opts["noise"] = "gaussian" if ne["level"] > 0 else "none"
            opts["noise_level"] = ne["level"]
            info["noise_estimate"] = ne
            notes.append(f"section noise: {ne['note']}")
            log.info("simulated section noise: %s", ne["note"])
        self.noise, self.noise_level = opts["noise"], float(opts["noise_level"])
        info.update(profile=opts["profile"], noise=self.noise, noise_level=self.noise_level, options=opts, notes=notes)
        self.info = info
        from ...nets import grid_of

        net = ctx.train.get("net")
        D, U = degradation_ops(ctx.patch, ctx.factor, profile, ctx.order,
                               first_row=bool(net) and grid_of(net) == "sections")
        self.D = torch.from_numpy(D).to(ctx.device)
        self.U = torch.from_numpy(U).to(ctx.device)
        self._validation = self._make_validation()

    def _degrade(self, hr, phases, noise_rng=None):
        torch = self._torch
        lr = torch.matmul(self.D[phases], hr)
        if self.noise != "none" and self.noise_level > 0:
            gen = noise_rng
            eps = (torch.randn(lr.shape, generator=gen, device="cpu").to(lr.device) if gen is not None
                   else torch.randn_like(lr))
            if self.noise == "poisson-gaussian":
                level = self.noise_level
                eps = eps * (torch.sqrt(torch.clamp(lr + 0.5, min=0.0) * level * 0.5) + level * 0.5)
            else:
                eps = eps * self.noise_level
            lr = lr + eps
        return torch.matmul(self.U[phases], lr)

    def _make_validation(self) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        rng = np.random.default_rng(12345)
        hr = torch.from_numpy(self.ctx.lateral_patches(N_VALIDATION, self.ctx.held_out_planes(), rng))
        hr = hr.to(self.ctx.device)
        phases = torch.from_numpy(rng.integers(0, len(self.D), N_VALIDATION)).to(self.ctx.device)
        with torch.no_grad():
            lr = self._degrade(hr, phases, torch.Generator().manual_seed(7))
        return lr.float().cpu().numpy(), hr.float().cpu().numpy()

    def batch(self, n: int):
        """``n`` training pairs (x, y), (n, 1, p, p) on the device."""
        torch = self._torch
        hr = torch.from_numpy(self.ctx.lateral_patches(n)).to(self.ctx.device, non_blocking=True)
        phases = torch.from_numpy(self.ctx.rng.integers(0, len(self.D), n)).to(self.ctx.device)
        with torch.no_grad():
            x = self._degrade(hr, phases).unsqueeze(1)
        return x, hr.unsqueeze(1)

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed held-out pairs (x, y), numpy (N, p, p)."""
        return self._validation


def isotropic_pairs(ctx):
    """The isotropic method's pair-maker: the learned degradation for ``--profile learned``, else a fixed or
    fitted section profile (:class:`LateralPairs`)."""
    if ctx.options.get("profile") == "learned":
        return LearnedPairs(ctx, {"profile": "learned", "options": dict(ctx.options)})
    return LateralPairs(ctx)
