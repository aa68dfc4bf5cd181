"""Learned axial degradation (Deng et al., MICCAI 2020): a CycleGAN between the stack's own lateral and axial planes.

The restorer of the isotropic method learns from lateral planes degraded "like z". Instead of assuming how z was cut
(point, slab, Gaussian, or a fitted kernel), this stage *learns* it, unpaired, from the same volume:

``G_hl``  lateral HR plane -> axial-like LR plane: pooling by F along the rows (a learned, symmetric, non-negative
          section kernel, initialised as the paper's average pooling, then sampling every F rows, so non-integer F
          works), residual blocks without batch norm, and a learned noise amplitude (the paper's G_hl is
          deterministic; fresh noise lets a thin simulated section carry the detector noise a real one has).
``G_lh``  LR -> HR, the paper's "DRCNet": interpolation along the rows, then residual blocks.
``D_l``   strided convolutions with 3 x 7 kernels, elongated and strided along the high-resolution axis.
``D_h``   a PatchGAN on HR planes.

Losses (paper eqs. 1-7): least-squares adversarial losses for both generators and discriminators, cycle L1 on both
cycles, ``L_G = alpha L_Ghl + beta L_Glh + eta L_cyc``. Optimiser (paper): Adam, betas (0.5, 0.999); generators
2e-4 decayed x0.98 every "epoch" (here: every 100 steps), discriminators 1e-4 fixed.

Afterwards (:class:`LearnedPairs`) ``G_hl`` makes the restorer's training inputs from lateral patches: the
isotropic method's ``--profile learned``. The networks' size is ``small`` by default (fits a CPU budget);
``--degradation-size paper`` gives the paper's 64 filters and 9 residual blocks.

Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ...errors import InputError
from ...geometry import training_phases
from ...interpolation import _mirror, interpolation_matrix
from ...profile_fit import noise_sigma

log = logging.getLogger(__name__)

#: Network sizes of the stage: (filters, residual blocks of G_hl, of G_lh, discriminator filters).
SIZES = {"tiny": (8, 1, 1, 8), "small": (32, 3, 4, 32), "paper": (64, 9, 9, 64)}
#: Steps of the stage when not given (``--degradation-steps``).
DEFAULT_STEPS = 400
#: Loss weights alpha, beta, eta of eq. 6 (the paper says only "positive"; eta = 10 is CycleGAN's).
ALPHA, BETA, ETA = 1.0, 1.0, 10.0
#: Generator learning-rate decay (paper: x0.98 per epoch) and the steps counted as one epoch here.
LR_G, LR_D, LR_DECAY, EPOCH_STEPS = 2e-4, 1e-4, 0.98, 100
#: The section kernel's and noise amplitude's learning rate, relative to the generators'.
KERNEL_LR_SCALE = 100.0
#: Sampling phases of the learned degradation when it makes training pairs.
N_PHASES = 16
#: Axial planes (xz and yz each) read for the discriminator's real LR examples.
N_AXIAL = 48


def geometry(patch: int, factor: float) -> tuple[int, int]:
    """(L, m): the HR side the degradation works on (the patch plus a margin of 2 F, so the patch's rows are all
    bracketed by samples at any phase) and the number of LR rows it keeps (the same at every phase)."""
    margin = 2 * int(math.ceil(factor))
    side = patch + margin
    m = int(math.floor((side - 1 - factor) / factor + 1e-9)) + 1
    return side, max(m, 2)


def _nets(size: str):
    import torch
    from torch import nn

    width, blocks_hl, blocks_lh, dwidth = SIZES[size]

    class Res(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.a = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
            self.b = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    def body(blocks: int) -> nn.Module:
        tail = nn.Conv2d(width, 1, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(tail.weight)
        nn.init.zeros_(tail.bias)
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1, padding_mode="reflect"),
                             *[Res(width) for _ in range(blocks)], tail)

    class Ghl(nn.Module):
        """HR (n, 1, L, W) -> LR (n, 1, m, W): learned section kernel, sampling, residual blocks, noise."""

        def __init__(self, shifts: np.ndarray, sample: np.ndarray, init_kernel: np.ndarray):
            super().__init__()
            # fixed operators, rebuilt for any plane size (not saved): mirrored shift pairs (r + 1, L, L) and
            # sampling every F rows (phases, m, L)
            self.register_buffer("shifts", torch.from_numpy(shifts), persistent=False)
            self.register_buffer("sample", torch.from_numpy(sample), persistent=False)
            self.logits = nn.Parameter(torch.from_numpy(np.log(np.maximum(init_kernel, 1e-4))).float())
            self.log_noise = nn.Parameter(torch.tensor(math.log(1e-3)))
            self.res = body(blocks_hl)

        def kernel(self):
            """The symmetric half kernel (centre first), non-negative, whole kernel summing to 1."""
            w = torch.softmax(self.logits, 0)
            return w / (w[0] + 2 * w[1:].sum())

        def linear(self, phases):
            k = self.kernel()
            blur = (k[:, None, None] * self.shifts).sum(0)  # (L, L)
            return self.sample[phases] @ blur  # (n, m, L)

        def forward(self, hr, phases=None, generator=None):
            n = hr.shape[0]
            if phases is None:
                phases = torch.zeros(n, dtype=torch.long, device=hr.device)
            lr = self.linear(phases)[:, None] @ hr
            lr = lr + self.res(lr)
            eps = (torch.randn(lr.shape, generator=generator).to(lr.device) if generator is not None
                   else torch.randn_like(lr))
            return lr + torch.exp(self.log_noise) * eps

    class Glh(nn.Module):
        """LR (n, 1, m, W) -> HR (n, 1, L, W): interpolation along the rows, then residual blocks (DRCNet)."""

        def __init__(self, up: np.ndarray):
            super().__init__()
            self.register_buffer("up", torch.from_numpy(up), persistent=False)  # (L, m)
            self.res = body(blocks_lh)

        def forward(self, lr):
            x = self.up @ lr
            return x + self.res(x)

    def dl() -> nn.Module:
        layers, c = [], 1
        for i in range(4):  # 3 x 7 kernels, strided along the high-resolution axis (x)
            layers += [nn.Conv2d(c, dwidth * 2 ** min(i, 2), (3, 7), stride=(1, 2), padding=(1, 3)),
                       nn.LeakyReLU(0.2)]
            c = dwidth * 2 ** min(i, 2)
        layers.append(nn.Conv2d(c, 1, (3, 3), padding=1))
        return nn.Sequential(*layers)

    def dh() -> nn.Module:  # PatchGAN
        c = dwidth
        return nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.InstanceNorm2d(2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, 1, 1), nn.InstanceNorm2d(4 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 4, 1, 1),
        )

    return Ghl, Glh, dl, dh


def _operators(side: int, m: int, factor: float, order: int, radius: int):
    """Fixed matrices: mirrored shifts (symmetric pairs) for the learned kernel, per-phase sampling (m x side),
    and the interpolation back (side x m) at phase 0 and every phase."""
    eye = np.eye(side, dtype=np.float32)
    idx = np.arange(side)
    shifts = np.zeros((radius + 1, side, side), np.float32)
    for j in range(radius + 1):
        for sgn in ((1,) if j == 0 else (1, -1)):
            shifts[j] += eye[_mirror(idx + sgn * j, side)]
    phases = training_phases(factor, N_PHASES)
    sample = np.stack([interpolation_matrix(side, p + np.arange(m) * factor, order=1) for p in phases])
    up = np.stack([interpolation_matrix(m, (np.arange(side) - p) / factor, order=order) for p in phases])
    return shifts, sample.astype(np.float32), up.astype(np.float32), phases


class DegradationLearner:
    """The stage's runner: trains the CycleGAN on the context's lateral patches and the stack's axial planes.

    ``step() -> dict`` (losses), ``state_dict()`` / ``load_state_dict()`` (the four networks, the step), and
    ``degrade(hr, phases)`` for :class:`LearnedPairs`.
    """

    def __init__(self, ctx) -> None:
        import torch

        self._torch = torch
        self.ctx = ctx
        self.size = str(ctx.options.get("degradation_size") or "small")
        if self.size not in SIZES:
            raise InputError(f"unknown degradation size {self.size!r}: choose one of {', '.join(SIZES)}")
        f = float(ctx.factor)
        self.side, self.m = geometry(ctx.patch, f)
        nz, ny, nx = ctx.data.shape
        if min(ny, nx, *ctx.pool.shape[1:]) < self.side:
            raise InputError(
                f"a learned degradation works on lateral crops of {self.side} x {self.side} (the patch {ctx.patch} "
                f"plus 2 F); the stack's planes are {ny} x {nx}. Use a smaller --patch, or --profile auto"
            )
        if nz < self.m + 1:
            raise InputError(
                f"a learned degradation needs real axial planes of at least {self.m + 1} sections for patches of "
                f"{ctx.patch} at F = {f:g}; this stack has {nz}. Use --profile auto, or a smaller --patch"
            )
        radius = int(math.ceil(1.5 * f))
        shifts, sample, up, _ = _operators(self.side, self.m, f, ctx.order, radius)
        # the paper's average pooling by F: a box of width F as the starting kernel
        j = np.arange(radius + 1)
        box = np.clip(np.minimum(j + 0.5, f / 2) - np.maximum(j - 0.5, -f / 2), 0, None)
        box = np.maximum(box / box.max(), 1e-2)  # every tap can still grow
        Ghl, Glh, dl, dh = _nets(self.size)
        dev = ctx.device
        self.g_hl = Ghl(shifts, sample, box).to(dev)
        self.g_lh = Glh(up[0]).to(dev)
        self.d_l, self.d_h = dl().to(dev), dh().to(dev)
        self.up = torch.from_numpy(up).to(dev)
        self.n_phases = len(sample)
        # NOTE: the section kernel and the noise amplitude (a few numbers) learn at KERNEL_LR_SCALE x the
        # generators' rate: at 2e-4 Adam moves a logit by ~2e-4 a step, and a few hundred steps could not reshape them.
        shape = [self.g_hl.logits, self.g_hl.log_noise]
        rest = [q for q in [*self.g_hl.parameters(), *self.g_lh.parameters()] if all(q is not r for r in shape)]
        self.opt_g = torch.optim.Adam([{"params": rest, "scale": 1.0},
                                       {"params": shape, "scale": KERNEL_LR_SCALE}], lr=LR_G, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(list(self.d_l.parameters()) + list(self.d_h.parameters()), lr=LR_D,
                                      betas=(0.5, 0.999))
        self.steps = 0
        self.batch = 8
        self._axial = self._load_axial()
        with torch.no_grad():  # start the noise at the level thin sections would need (refined by D_l)
            sigma = float(np.median([noise_sigma(p) for p in ctx.pool[:16].numpy()])) if len(ctx.pool) else 0.0
            self.g_hl.log_noise.fill_(math.log(max(sigma, 1e-4)))

    # ------------------------------------------------------------------ data
    def _load_axial(self) -> np.ndarray:
        """Real axial planes (z rows, lateral columns), normalised: xz planes at random y and yz planes at random
        x, cropped to at most 512 columns; a pool the discriminator's real LR examples are cut from."""
        data, rng = self.ctx.data, np.random.default_rng(int(self.ctx.rng.integers(1 << 31)))
        nz, ny, nx = data.shape
        width = min(512, ny, nx)
        planes = []
        for axis_len, other, take in ((ny, nx, "xz"), (nx, ny, "yz")):
            for pos in np.sort(rng.choice(axis_len, size=min(N_AXIAL, axis_len), replace=False)):
                c0 = int(rng.integers(0, other - width + 1))
                a = data[:, int(pos), c0 : c0 + width] if take == "xz" else data[:, c0 : c0 + width, int(pos)]
                planes.append(a)
        if hasattr(planes[0], "dask"):
            import dask.array as da

            arr = da.stack(planes).compute()
        else:
            arr = np.stack([np.asarray(p) for p in planes])
        return np.ascontiguousarray(self.ctx.norm.apply(arr), np.float32)

    def real_lr(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` random (m, side) crops of real axial planes (rows: z), randomly flipped."""
        rng = self.ctx.rng if rng is None else rng
        a = self._axial
        nz, w = a.shape[1], a.shape[2]
        side = min(self.side, w)
        out = np.empty((n, self.m, side), np.float32)
        for i in range(n):
            k, z0, c0 = rng.integers(0, len(a)), rng.integers(0, nz - self.m + 1), rng.integers(0, w - side + 1)
            crop = a[k, z0 : z0 + self.m, c0 : c0 + side]
            if rng.random() < 0.5:
                crop = crop[::-1]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = crop
        return out

    def real_hr(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` random (side, side) lateral patches (rows are degraded), randomly transposed and flipped."""
        return self.ctx.lateral_patches(n, rng=rng, size=self.side)

    # ----------------------------------------------------------------- train
    def step(self) -> dict:
        torch = self._torch
        dev = self.ctx.device
        n = self.batch
        hr = torch.from_numpy(self.real_hr(n)).to(dev)[:, None]
        lr = torch.from_numpy(self.real_lr(n)).to(dev)[:, None]
        if lr.shape[-1] != hr.shape[-1]:  # a stack narrower than the working side
            hr = hr[..., : lr.shape[-1]]
        decay = LR_DECAY ** (self.steps // EPOCH_STEPS)
        for g in self.opt_g.param_groups:
            g["lr"] = LR_G * decay * g["scale"]
        mse = torch.nn.functional.mse_loss
        l1 = torch.nn.functional.l1_loss
        # generators (eqs. 1, 3, 5, 6)
        fake_lr = self.g_hl(hr)
        fake_hr = self.g_lh(lr)
        dl_fake, dh_fake = self.d_l(fake_lr), self.d_h(fake_hr)
        adv_hl = mse(dl_fake, torch.ones_like(dl_fake))
        adv_lh = mse(dh_fake, torch.ones_like(dh_fake))
        cyc = l1(self.g_hl(fake_hr), lr) + l1(self.g_lh(fake_lr), hr)
        loss_g = ALPHA * adv_hl + BETA * adv_lh + ETA * cyc
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        # discriminators (eqs. 2, 4, 7)
        rl, fl = self.d_l(lr), self.d_l(fake_lr.detach())
        rh, fh = self.d_h(hr), self.d_h(fake_hr.detach())
        loss_d = (mse(rl, torch.ones_like(rl)) + mse(fl, torch.zeros_like(fl))
                  + mse(rh, torch.ones_like(rh)) + mse(fh, torch.zeros_like(fh)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.steps += 1
        return {"loss": float(loss_g.detach()), "loss_d": float(loss_d.detach()), "cycle": float(cyc.detach()),
                "lr": LR_G * decay}

    # ------------------------------------------------------------ use, save
    def degrade(self, hr, phases=None, generator=None):
        """LR planes (n, 1, m, W) made by G_hl from HR planes (n, 1, side, W) at sampling ``phases``."""
        with self._torch.no_grad():
            return self.g_hl(hr, phases, generator)

    def upsample(self, lr, phases):
        """Interpolate LR planes back onto the HR rows (n, 1, side, W), as at reconstruction time."""
        return self.up[phases][:, None] @ lr

    def kernel(self) -> np.ndarray:
        """The learned section kernel (whole, centred), on the lateral pixel grid."""
        with self._torch.no_grad():
            half = self.g_hl.kernel().cpu().numpy()
        return np.concatenate([half[:0:-1], half]).astype(np.float32)

    def noise_level(self) -> float:
        return float(self._torch.exp(self.g_hl.log_noise).detach().cpu())

    def summary(self) -> dict:
        """What was learned, for the model's config and people: the kernel's FWHM and spread, the noise."""
        k = self.kernel()
        x = np.arange(len(k)) - len(k) // 2
        f = float(self.ctx.factor)
        above = x[k >= 0.5 * k.max()]
        return {"kernel": [round(float(v), 5) for v in k], "fwhm": round(float(above[-1] - above[0] + 1) / f, 3),
                "spread": round(float(np.sqrt((k * x**2).sum())) / f, 3), "noise": round(self.noise_level(), 5),
                "size": self.size, "steps": self.steps}

    def state_dict(self) -> dict:
        return {"g_hl": self.g_hl.state_dict(), "g_lh": self.g_lh.state_dict(), "d_l": self.d_l.state_dict(),
                "d_h": self.d_h.state_dict(), "steps": self.steps, "size": self.size}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("size", self.size) != self.size:
            raise InputError(f"the saved degradation networks are of size {sd.get('size')!r}, not {self.size!r}")
        try:
            for name in ("g_hl", "g_lh", "d_l", "d_h"):
                getattr(self, name).load_state_dict(sd[name])
        except (KeyError, RuntimeError) as err:
            raise InputError(f"the saved learned degradation does not fit this stack or model: {err}") from None
        self.steps = int(sd.get("steps", 0))


class LearnedPairs:
    """Pairs for the restorer made by the learned degradation: a lateral patch, and G_hl's LR version of it
    interpolated back exactly as real axial planes are at reconstruction time."""

    def __init__(self, ctx, info: dict | None = None) -> None:
        import torch

        from ...nets import grid_of

        self._torch = torch
        self.ctx = ctx
        net = ctx.train.get("net")
        # a section-grid network: every pair at sampling phase 0 (its row 0 a section)
        self.section_grid = bool(net) and grid_of(net) == "sections"
        self.learner: DegradationLearner = ctx.stages["degradation"]
        summary = self.learner.summary()
        note = (f"learned degradation: section kernel FWHM {summary['fwhm']:.2f} F, spread {summary['spread']:.2f} F, "
                f"noise {summary['noise']:.4f} (normalised), after {summary['steps']} steps")
        log.info(note)
        self.info = {**(info or {}), "degradation": summary,
                     "notes": [*(info or {}).get("notes", []), note]}
        self._validation = self._make_validation()

    def _pairs(self, hr: np.ndarray, rng: np.random.Generator, generator=None):
        torch = self._torch
        dev = self.ctx.device
        p = self.ctx.patch
        hr_t = torch.from_numpy(np.ascontiguousarray(hr)).to(dev)[:, None]
        drawn = np.zeros(len(hr), np.int64) if self.section_grid else rng.integers(0, self.learner.n_phases, len(hr))
        phases = torch.from_numpy(drawn).to(dev)
        with torch.no_grad():
            lr = self.learner.degrade(hr_t, phases, generator)
            x = self.learner.upsample(lr, phases)
        return x[..., :p, :p], hr_t[..., :p, :p]

    def batch(self, n: int):
        x, y = self._pairs(self.learner.real_hr(n), self.ctx.rng)
        return x.contiguous(), y.contiguous()

    def _make_validation(self):
        rng = np.random.default_rng(12345)
        hr = self.ctx.lateral_patches(16, self.ctx.held_out_planes(), rng, size=self.learner.side)
        x, y = self._pairs(hr, rng, self._torch.Generator().manual_seed(7))
        return x[:, 0].float().cpu().numpy(), y[:, 0].float().cpu().numpy()

    def validation(self):
        return self._validation


def load_degradation(state: dict, side: int, factor: float, device: str = "cpu"):
    """G_hl from a saved stage state, rebuilt for lateral planes of ``side`` rows: a callable
    ``(hr (n, 1, side, W) tensor, generator) -> LR (n, 1, m, W)`` at sampling phase 0, and ``m``."""
    import torch

    size = str(state.get("size", "small"))
    if size not in SIZES or "g_hl" not in state or "logits" not in state["g_hl"]:
        raise InputError("the model's learned degradation is incomplete or of an unknown kind; train it again")
    radius = int(state["g_hl"]["logits"].shape[0]) - 1
    m = int(math.floor((side - 1) / factor + 1e-9)) + 1
    shifts, sample, _, _ = _operators(side, m, factor, 3, radius)
    Ghl = _nets(size)[0]
    g = Ghl(shifts, sample[:1], np.ones(radius + 1, np.float32))
    try:
        g.load_state_dict(state["g_hl"])
    except RuntimeError as err:
        raise InputError(f"the model's learned degradation does not load: {err}") from None
    g.to(device).eval()

    def run(hr, generator=None):
        with torch.no_grad():
            return g(hr.to(device), None, generator)

    return run, m


def learned_active(options: dict[str, Any]) -> bool:
    """The degradation stage runs only for ``--profile learned``."""
    return options.get("profile") == "learned"
