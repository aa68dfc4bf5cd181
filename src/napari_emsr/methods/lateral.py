"""Self-supervised isotropic reconstruction (paper 000, A2I-3DEM): lateral planes degraded the way z was cut.

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

from ..degrade import (
    NOISES,
    PROFILE_DESCRIPTIONS,
    PROFILES,
    fit_profile,
    interpolation_matrix,
    noise_sigma,
    profile_kernel,
    section_blur,
)
from ..geometry import training_phases
from . import Method, Option, Stage
from .degradation import DEFAULT_STEPS as DEGRADATION_STEPS
from .degradation import SIZES as DEGRADATION_SIZES
from .degradation import DegradationLearner, LearnedPairs, learned_active

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


def degradation_ops(patch: int, factor: float, profile, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-phase matrices (D: samples x patch, U: patch x samples), zero-padded to a common sample count.

    ``profile`` is a name of :data:`~napari_emsr.degrade.PROFILES`, ``"mixed"``, or a ``(thickness, softness)``
    pair of the continuous family (:func:`~napari_emsr.degrade.section_kernel`).

    ``profile="mixed"`` stacks the operators of every section profile (point, gaussian, slab), so each
    training pair draws its profile at random: a network that does not depend on knowing the profile.
    """
    profiles = list(PROFILES) if profile == "mixed" else [profile]
    # NOTE: phases are those real data has ((-o) mod F), not spread over [0, F): a fractional phase makes each
    # training sample a blend of two rows, a blur that real point-sampled sections do not have.
    phases = training_phases(factor, N_PHASES)
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


class LateralPairs:
    """Paper 000's pair-maker: a lateral patch and the same patch degraded along its rows like z.

    Resolves the ``auto`` options on the stack (section profile fitted by :func:`~napari_emsr.degrade.fit_profile`,
    noise by :func:`matched_noise`), precomputes the degradation operators on the training device and fixes
    the held-out validation pairs.
    """

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
        D, U = degradation_ops(ctx.patch, ctx.factor, profile, ctx.order)
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


SECTION_CHOICES = ("auto", *PROFILES, "fitted", "learned", "mixed")
SECTION_DESCRIPTIONS = {
    **PROFILE_DESCRIPTIONS,
    "auto": "fitted to the stack (the default): the slab thickness and edge softness whose simulated sections "
    "have the z spectrum of the stack",
    "fitted": "a slab of --thickness F with Gaussian edges of --softness F (fitted to the stack when not given)",
    "learned": "learned from the stack by a CycleGAN between its lateral and axial planes (paper 001), before the "
    "restoring network trains",
}

ISOTROPIC = Method(
    name="isotropic",
    description="self-supervised isotropic reconstruction (A2I-3DEM, paper 000): learn from the stack's own "
    "xy planes degraded like z, restore every xz/yz plane",
    pairs=isotropic_pairs,
    net="rescnn",
    size="small",
    loss="l1_pdl",
    order=3,
    # NOTE: batch_cuda: on a large GPU, batch 8 leaves it idle; 64 is the measured choice there
    # (benchmarks/bench_speed.py, README). The CPU batch is TRAINING_DEFAULTS["batch"].
    defaults={"batch_cuda": 64},
    loss_args={"alpha": "pdl_weight"},
    stages=(Stage("degradation", DEGRADATION_STEPS, DegradationLearner, when=learned_active),),
    options=(
        # NOTE: profile "auto" fits the section profile to the stack (degrade.fit_profile); the old three-way
        # estimate (degrade.estimate_profile) named the wrong profile on held-out slab stacks (issue 9). A wrong
        # guess is costly and assuming more blur than the stack has costs most, so the estimate leans to the less
        # blurred profile when it is unsure (benchmarks/bench_profile.py, bench_quality.py --train-profile).
        Option("profile", "auto", choices=SECTION_CHOICES, label="Sections",
               help="how the z sections were cut: auto (a slab of fitted thickness and edge softness, fitted to the "
               "stack's z spectrum), point (thin samples, e.g. FIB-SEM), slab (sections integrate their thickness "
               "F, e.g. serial-section TEM), gaussian (a soft slab), fitted (--thickness/--softness), learned (a "
               "CycleGAN learns the degradation from the stack first, paper 001), or mixed (point, slab and "
               "gaussian at random)",
               descriptions=SECTION_DESCRIPTIONS),
        Option("thickness", None, type=float, label="Section thickness",
               help="--profile fitted: slab thickness in units of the section spacing F (1 = a slab of F); fitted "
               "to the stack when not given"),
        Option("softness", None, type=float, label="Edge softness",
               help="--profile fitted: Gaussian edge (standard deviation) of the slab, in units of F; fitted to the "
               "stack when not given"),
        Option("degradation_steps", DEGRADATION_STEPS, type=int, label="Degradation steps",
               help="--profile learned: training steps of the CycleGAN that learns the degradation (paper 001)"),
        Option("degradation_size", "small", choices=tuple(DEGRADATION_SIZES), label="Degradation networks",
               help="--profile learned: size of the CycleGAN's networks (paper: 64 filters, 9 residual blocks)"),
        Option("noise", "auto", choices=("auto", *NOISES), label="Section noise",
               help="noise added to the simulated sections: auto gives thick simulated sections back the noise their "
               "blur averaged away, and point sections fresh noise at the stack's level (they would share theirs "
               "with the target), measured on the stack"),
        Option("noise_level", 0.0, type=float, label="Noise level",
               help="noise sigma in normalised units (0-1 range) for --noise gaussian/poisson-gaussian"),
        Option("pdl_weight", 0.01, type=float, label="PDL weight",
               help="weight of the projected distribution loss next to L1 (paper 000: 0.01)"),
    ),
)
