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
    from ..heldout import judge_profiles

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


class ContextPairs(LateralPairs):
    """Self-supervised pairs with multi-slice context: the input is the patch and the same patch in the ``context``
    sections on either side (2N+1 channels, the patch in the middle), each degraded along its rows like z with
    the same sampling phase and profile (independent noise); the target is the middle patch.

    Training and application context (see :mod:`napari_emsr.nets.context_arch`): in a pair the axis perpendicular
    to the patch is the stack's z, so the neighbours are whole sections, F lateral pixels apart. At application the
    axis perpendicular to an xz plane is y: the matching neighbours are the interpolated xz planes F rows apart
    (``stride`` = round(F)), not the adjacent rows. Where the sections are thick, a training neighbour is itself
    averaged over its section's thickness along the context axis, which an application neighbour is not.

    ``validation()`` gives (x, y) with x of shape (N, 2N+1, p, p).
    """

    def __init__(self, ctx, context: int = 2, stacks: int = 48) -> None:
        self.context = int(context)
        self._stacks_n = int(stacks)
        self._stacks = None
        super().__init__(ctx)

    def _neighbours(self, z: int) -> list[int]:
        nz = self.ctx.data.shape[0]
        return [int(np.clip(z + k, 0, nz - 1)) for k in range(-self.context, self.context + 1)]

    def _load_stacks(self):
        """Random lateral crops of 2N+1 consecutive sections around training sections, normalised, in memory."""
        ctx = self.ctx
        nz, ny, nx = ctx.data.shape
        centres = np.setdiff1d(np.arange(nz), ctx.val_planes)
        rng = np.random.default_rng(int(ctx.rng.integers(1 << 31)))
        pick = np.sort(rng.choice(centres, size=min(len(centres), self._stacks_n), replace=False))
        cy, cx = min(ny, 256), min(nx, 256)
        out = []
        for z in pick:
            y0, x0 = int(rng.integers(0, ny - cy + 1)), int(rng.integers(0, nx - cx + 1))
            a = ctx.data[self._neighbours(int(z)), y0 : y0 + cy, x0 : x0 + cx]
            out.append(np.asarray(a.compute() if hasattr(a, "compute") else a))
        return ctx.norm.apply(np.stack(out))

    def _patches(self, stacks: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random (2N+1, p, p) crops of context stacks, transposed and flipped together."""
        p = self.ctx.patch
        _, c, cy, cx = stacks.shape
        idx, ys, xs = rng.integers(0, len(stacks), n), rng.integers(0, cy - p + 1, n), rng.integers(0, cx - p + 1, n)
        out = np.empty((n, c, p, p), np.float32)
        for i in range(n):
            a = stacks[idx[i], :, ys[i] : ys[i] + p, xs[i] : xs[i] + p]
            if rng.random() < 0.5:
                a = a.transpose(0, 2, 1)
            if rng.random() < 0.5:
                a = a[:, ::-1]
            if rng.random() < 0.5:
                a = a[:, :, ::-1]
            out[i] = a
        return out

    def _degrade_context(self, hr, phases, noise_rng=None):
        n, c, p, _ = hr.shape
        rep = phases.repeat_interleave(c)
        return self._degrade(hr.reshape(n * c, p, p), rep, noise_rng).reshape(n, c, p, p)

    def _make_validation(self):
        torch = self._torch
        ctx = self.ctx
        rng = np.random.default_rng(12345)
        held = np.stack([ctx.norm.apply(np.asarray(ctx.data[self._neighbours(int(z))])) for z in ctx.val_planes])
        hr = torch.from_numpy(self._patches(held, N_VALIDATION, rng)).to(ctx.device)
        phases = torch.from_numpy(rng.integers(0, len(self.D), N_VALIDATION)).to(ctx.device)
        with torch.no_grad():
            x = self._degrade_context(hr, phases, torch.Generator().manual_seed(7))
        return x.float().cpu().numpy(), hr[:, self.context].float().cpu().numpy()

    def batch(self, n: int):
        """``n`` training pairs: x (n, 2N+1, p, p), y (n, 1, p, p) on the device."""
        torch = self._torch
        if self._stacks is None:
            self._stacks = self._load_stacks()
        hr = torch.from_numpy(self._patches(self._stacks, n, self.ctx.rng)).to(self.ctx.device)
        phases = torch.from_numpy(self.ctx.rng.integers(0, len(self.D), n)).to(self.ctx.device)
        with torch.no_grad():
            x = self._degrade_context(hr, phases)
        return x, hr[:, self.context : self.context + 1].contiguous()


def context_stacks(planes: np.ndarray, context: int, stride: int) -> np.ndarray:
    """Application context: planes (n, H, W), consecutive along the axis perpendicular to them, as
    (n, 2N+1, H, W) stacks of each plane's neighbours ``stride`` planes apart (mirrored at the ends)."""
    n = len(planes)
    idx = np.arange(n)[:, None] + stride * np.arange(-context, context + 1)[None]
    if n > 1:
        period = 2 * (n - 1)
        idx = np.mod(idx, period)
        idx = np.where(idx >= n, period - idx, idx)
    else:
        idx = np.zeros_like(idx)
    return planes[idx]


def isotropic_pairs(ctx):
    """The isotropic method's pair-maker: the learned degradation for ``--profile learned``, else a fixed or
    fitted section profile (:class:`LateralPairs`)."""
    if ctx.options.get("profile") == "learned":
        return LearnedPairs(ctx, {"profile": "learned", "options": dict(ctx.options)})
    return LateralPairs(ctx)


SECTION_CHOICES = ("auto", *PROFILES, "fitted", "judged", "learned", "mixed")
SECTION_DESCRIPTIONS = {
    **PROFILE_DESCRIPTIONS,
    "auto": "fitted to the stack (the default): the slab thickness and edge softness whose simulated sections "
    "have the z spectrum of the stack",
    "fitted": "a slab of --thickness F with Gaussian edges of --softness F (fitted to the stack when not given)",
    "judged": "experimental: the fitted profile or point sampling, whichever predicts the stack's own held-out "
    "sections better after a short training of each (--judge-steps); on held-out slab stacks it chose point and "
    "lost 0.8 dB to auto (README, issue 21)",
    "learned": "experimental: learned from the stack by a CycleGAN between its lateral and axial planes (paper 001), "
    "before the restoring network trains; on held-out stacks it trails auto, and on a noisy one it fell below cubic "
    "(README, issue 9)",
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
               "F, e.g. serial-section TEM), gaussian (a soft slab), fitted (--thickness/--softness), learned "
               "(experimental: a CycleGAN learns the degradation from the stack first, paper 001; it trails auto on "
               "held-out stacks), or mixed (point, slab and "
               "gaussian at random)",
               descriptions=SECTION_DESCRIPTIONS),
        Option("thickness", None, type=float, label="Section thickness",
               help="--profile fitted: slab thickness in units of the section spacing F (1 = a slab of F); fitted "
               "to the stack when not given"),
        Option("softness", None, type=float, label="Edge softness",
               help="--profile fitted: Gaussian edge (standard deviation) of the slab, in units of F; fitted to the "
               "stack when not given"),
        Option("judge_steps", 300, type=int, label="Judge steps",
               help="--profile judged: training steps of each candidate profile's judge (at twice the section "
               "spacing, on every other section)"),
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
