"""Self-supervised training on the volume itself (paper 000), as a generator of small events.

Pairs: random lateral (xy) patches from random z, degraded along one lateral axis (y or x, both used) the way
z was acquired (section profile, sampling every F rows at a random phase, optional noise), interpolated back to
the patch size with exactly the interpolation used at reconstruction; the network learns the original patch.

The whole degradation is linear, so it is precomputed as two small matrices per sampling phase and applied
to a batch on the training device with two batched matmuls (no host work per step on a GPU).

``Trainer.run()`` yields a :class:`TrainEvent` after every step and checks for a stop request between steps;
``Trainer.model`` is a usable :class:`~napari_emsr.model.EMSRModel` at any time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .degrade import (
    NOISES,
    PROFILES,
    estimate_profile,
    interpolate_axis,
    interpolation_matrix,
    noise_sigma,
    profile_kernel,
    section_blur,
)
from .errors import InputError
from .geometry import check_factor, output_positions, training_phases
from .methods import get_method

log = logging.getLogger(__name__)

N_PHASES = 16
#: Held-out PSNR this far (dB) below the best seen means training diverged: roll back, halve the learning rate.
DIVERGENCE_DB = 1.0


@dataclass
class TrainConfig:
    """Training options; ``None`` means the method's default (``methods.METHODS[method].defaults``)."""

    factor: float | None = None
    axis: int = 0
    method: str = "isotropic"
    net: str | None = None
    size: str | None = None
    net_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    minutes: float | None = None
    patch: int | None = None
    batch: int | None = None
    lr: float | None = None
    profile: str | None = None
    noise: str = "auto"
    noise_level: float = 0.0
    pdl_weight: float = 0.01
    device: str = "auto"
    seed: int = 0
    val_every: int = 50
    preview_every: int = 100
    checkpoint: str | None = None
    checkpoint_every: int = 250
    threads: int | None = None

    def resolved(self, device: str | None = None) -> TrainConfig:
        """A copy with the method's defaults filled in (``batch_cuda`` instead of ``batch`` on a CUDA device)."""
        m = get_method(self.method)
        if not m.trains:
            raise InputError(f"method {m.name!r} needs no training; apply it directly (emsr reconstruct --method {m.name})")
        c = TrainConfig(**asdict(self))
        c.net = c.net or m.net
        c.size = c.size or m.size
        defaults = {"steps": 3000, "patch": 64, "batch": 8, "lr": 1e-3, "profile": "auto", **m.defaults}
        batch_cuda = defaults.pop("batch_cuda", None)
        if c.batch is None and batch_cuda and device is not None and device.startswith("cuda"):
            c.batch = batch_cuda
        for k, v in defaults.items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        return c


@dataclass
class TrainEvent:
    """What the trainer reports after a step (small: safe to send to a GUI thread)."""

    step: int
    total: int
    loss: float
    lr: float
    elapsed: float
    val_psnr: float | None = None
    cubic_psnr: float | None = None
    preview: np.ndarray | None = None
    done: bool = False

    @property
    def gain(self) -> float | None:
        """PSNR gain of the network over cubic interpolation on held-out planes (dB)."""
        if self.val_psnr is None or self.cubic_psnr is None:
            return None
        return self.val_psnr - self.cubic_psnr


def robust_range(data, planes: int = 16, low: float = 0.5, high: float = 99.5, seed: int = 0) -> tuple[float, float]:
    """Intensity percentiles on a sample of planes along axis 0 (computed once, stored with the model)."""
    n = data.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, planes), replace=False))
    sample = np.asarray(_compute(data[idx]), dtype=np.float32)
    if not np.isfinite(sample).all():
        raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) before training")
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _compute(a):
    return a.compute() if hasattr(a, "compute") else np.asarray(a)


def matched_noise(planes: np.ndarray, profile: str, factor: float) -> dict:
    """The noise to add to simulated sections so they are as noisy as the real ones.

    A real section carries the detector's noise at full strength, whatever its thickness; a section simulated by
    blurring a lateral plane with the profile's kernel ``h`` averages that plane's noise down to
    ``sigma * sqrt(sum h^2)``. Adding ``sigma * sqrt(1 - sum h^2)`` gives it back.
    A section that keeps most of its plane's own noise (point sampling: all of it) shares that noise with the
    target, so the network learns to copy each section's noise and to denoise only the planes between them: the
    result bands with the section period. Such sections get fresh noise of ``sigma * sqrt(sum h^2)`` instead
    (``sigma`` for point sampling), i.e. ``sigma * sqrt(max(1 - sum h^2, sum h^2))`` in general.
    ``sigma`` is the median white-noise level of ``planes`` (normalised intensities; Immerkaer's estimator).
    Measured (medulla, 3 min CPU, ``benchmarks/bench_quality.py``): F = 4 slab stack with noise of 8 grey levels,
    +2.38 dB over cubic with the matched noise, -0.09 dB without; F = 4 point stack with noise of 8 grey levels,
    +2.75 dB and banding 0.69 with fresh noise, +2.36 dB and banding 0.41 without; the clean point stack (its own
    noise 0.025), +1.38 / +0.034 SSIM / banding 0.68 with, +1.32 / +0.036 / 0.60 without.
    """
    sigma = float(np.median([noise_sigma(p) for p in planes[:16]])) if len(planes) else 0.0
    profiles = list(PROFILES) if profile == "mixed" else [profile]
    kept = []
    for prof in profiles:
        k = profile_kernel(prof, factor)
        kept.append(1.0 if k is None else float((k.astype(np.float64) ** 2).sum()))
    own = float(np.mean(kept))  # the share of a plane's noise variance a simulated section keeps
    level = sigma * math.sqrt(min(1.0, max(1.0 - own, own)))
    note = (f"noise {level:.4f} added to simulated {profile} sections (lateral noise {sigma:.4f}, normalised)"
            if level > 0 else f"none added (the stack shows no noise: {sigma:.4f})")
    return {"level": round(level, 6), "sigma": round(sigma, 6), "note": note}


def _degradation_ops(patch: int, factor: float, profile: str, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-phase matrices (D: samples x patch, U: patch x samples), zero-padded to a common sample count.

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


class Trainer:
    """Train a network on one anisotropic volume, self-supervised.

    Parameters
    ----------
    volume : Volume or array
        The anisotropic stack (z, y, x) (or with the anisotropic axis ``config.axis``).
    config : TrainConfig
        Options; ``factor`` defaults to the one the voxel size implies.
    resume : EMSRModel or path, optional
        Continue from this model or checkpoint (weights, step count, history; optimizer state if saved).
    preview_index : int, optional
        The y index of the xz plane re-inferred for the live preview (default: the middle).
    """

    def __init__(self, volume, config: TrainConfig | None = None, *, resume=None, preview_index: int | None = None):
        import torch

        from .device import resolve_device
        from .io import as_volume
        from .model import EMSRModel

        self._torch = torch
        config = config or TrainConfig()
        device = resolve_device(config.device)
        config = config.resolved(device)
        vol = volume if hasattr(volume, "spacing") and hasattr(volume, "data") else as_volume(volume)
        data = vol.data
        if config.axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2 (the anisotropic axis of a (z, y, x) stack), got {config.axis}")
        if config.axis != 0:
            data = data.transpose([config.axis] + [a for a in range(3) if a != config.axis])
        factor = config.factor
        if factor is None:
            factor = vol.factor
            if factor is not None and config.axis != 0 and vol.spacing is not None:
                lat = [s for a, s in enumerate(vol.spacing) if a != config.axis]
                factor = vol.spacing[config.axis] / lat[-1]
        if factor is None:
            raise InputError(
                "the file has no voxel size, so the anisotropy factor is unknown: pass --factor F "
                "(z spacing / lateral spacing, e.g. 40 nm / 10 nm -> 4)"
            )
        config.factor = check_factor(factor)
        self.optimizer_state = None
        if resume is not None and not isinstance(resume, EMSRModel):
            resume, extra = EMSRModel.load(resume, with_extra=True)
            self.optimizer_state = extra.get("optimizer")
        if resume is not None:
            resume.check_compatible(config.factor, config.axis)
            rc = resume.config
            config.net, config.net_kwargs, config.size = rc["net"], rc.get("net_kwargs", {}), rc.get("size")
            config.profile = rc.get("profile", config.profile)
            if "noise_level" in rc:  # continue with the noise the model was trained with
                config.noise, config.noise_level = rc.get("noise", "none"), float(rc["noise_level"])
        self.config = config
        self.data = data
        self.volume = vol
        self.device = device
        if config.threads:
            torch.set_num_threads(int(config.threads))
        nz, ny, nx = data.shape
        patch = int(config.patch)
        if min(ny, nx) < patch:
            if min(ny, nx) >= 16:
                patch = int(min(ny, nx))
                log.info("lateral size %s is smaller than the patch; using patch %d", (ny, nx), patch)
            else:
                raise InputError(
                    f"the lateral planes ({ny} x {nx}) are smaller than one training patch (at least 16 x 16); "
                    "use a larger crop of the volume"
                )
        self.patch = patch
        self.method = get_method(config.method)
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.norm = tuple(resume.config["norm"]) if resume is not None else robust_range(data, seed=config.seed)

        from .nets import build_net, net_sizes

        kwargs = dict(net_sizes(config.net).get(config.size, {})) if config.size else {}
        kwargs.update(config.net_kwargs)
        config.net_kwargs = kwargs
        self.net = build_net(config.net, **kwargs)
        self.start_step = 0
        self.history: list[dict] = []
        if resume is not None:
            self.net.load_state_dict(resume.state_dict)
            self.start_step = resume.step
            self.history = list(resume.history)
        self.net.to(self.device)
        if self.device.startswith("cuda"):
            self.net = self.net.to(memory_format=torch.channels_last)
        self.step = self.start_step
        self._stop = False
        self._best: tuple[float, int, dict | None] = (-math.inf, -1, None)
        self._lr_scale = 1.0
        self._load_pool()
        self.profile_estimate: dict | None = None
        if config.profile == "auto":
            est = estimate_profile(data, config.factor)
            config.profile = est.profile
            self.profile_estimate = est.as_dict()
            log.info("section profile: %s", est.note)
        elif config.profile not in PROFILES + ("mixed",):
            raise InputError(
                f"unknown section profile {config.profile!r}: choose auto, {', '.join(PROFILES)} or mixed"
            )
        self.noise_estimate: dict | None = None
        if config.noise == "auto":
            self.noise_estimate = matched_noise(self.pool.numpy(), config.profile, config.factor)
            config.noise = "gaussian" if self.noise_estimate["level"] > 0 else "none"
            config.noise_level = self.noise_estimate["level"]
            log.info("simulated section noise: %s", self.noise_estimate["note"])
        elif config.noise not in NOISES:
            raise InputError(f"unknown noise model {config.noise!r}: choose auto, {', '.join(NOISES)}")
        D, U = _degradation_ops(patch, config.factor, config.profile, self.method.order)
        self.D = torch.from_numpy(D).to(self.device)
        self.U = torch.from_numpy(U).to(self.device)
        self._make_validation()
        ys = ny // 2 if preview_index is None else int(np.clip(preview_index, 0, ny - 1))
        self.preview_index = ys
        self._preview_in: np.ndarray | None = None

    # ------------------------------------------------------------------ data
    def _normalise(self, a: np.ndarray) -> np.ndarray:
        lo, hi = self.norm
        return (np.asarray(a, np.float32) - lo) / (hi - lo)

    def _load_pool(self, max_planes: int = 96, crop: int = 256) -> None:
        """Read random lateral crops into memory (normalised); some z planes are held out for validation."""
        nz, ny, nx = self.data.shape
        zs = np.arange(nz)
        n_val = 0 if nz < 3 else int(np.clip(round(0.1 * nz), 1, 4))
        val = zs[np.linspace(0, nz - 1, n_val + 2)[1:-1].round().astype(int)] if n_val else zs[:1]
        train = np.setdiff1d(zs, val) if n_val else zs
        self.val_planes = val
        pick = np.sort(self.rng.choice(train, size=min(len(train), max_planes), replace=False))
        cy, cx = min(ny, max(crop, self.patch)), min(nx, max(crop, self.patch))
        crops = []
        for z in pick:
            y0 = int(self.rng.integers(0, ny - cy + 1))
            x0 = int(self.rng.integers(0, nx - cx + 1))
            crops.append(self.data[int(z), y0 : y0 + cy, x0 : x0 + cx])
        import dask.array as da

        arr = _compute(da.stack(crops)) if hasattr(crops[0], "dask") else np.stack([np.asarray(c) for c in crops])
        arr = self._normalise(arr)
        if not np.isfinite(arr).all():
            raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) before training")
        self.pool = self._torch.from_numpy(np.ascontiguousarray(arr))

    def _sample_hr(self, n: int, pool, rng: np.random.Generator) -> np.ndarray:
        p = self.patch
        _, cy, cx = pool.shape
        idx = rng.integers(0, pool.shape[0], n)
        ys = rng.integers(0, cy - p + 1, n)
        xs = rng.integers(0, cx - p + 1, n)
        out = np.empty((n, p, p), np.float32)
        for i in range(n):
            a = pool[idx[i], ys[i] : ys[i] + p, xs[i] : xs[i] + p]
            a = a.numpy() if hasattr(a, "numpy") else a
            if rng.random() < 0.5:  # degrade along x instead of y
                a = a.T
            if rng.random() < 0.5:
                a = a[::-1]
            if rng.random() < 0.5:
                a = a[:, ::-1]
            out[i] = a
        return out

    def _degrade(self, hr, phases, noise_rng=None):
        torch = self._torch
        lr = torch.matmul(self.D[phases], hr)
        c = self.config
        if c.noise != "none" and c.noise_level > 0:
            gen = noise_rng
            eps = torch.randn(lr.shape, generator=gen, device="cpu").to(lr.device) if gen is not None else torch.randn_like(lr)
            if c.noise == "poisson-gaussian":
                eps = eps * (torch.sqrt(torch.clamp(lr + 0.5, min=0.0) * c.noise_level * 0.5) + c.noise_level * 0.5)
            else:
                eps = eps * c.noise_level
            lr = lr + eps
        return torch.matmul(self.U[phases], lr)

    def _make_validation(self, n: int = 16) -> None:
        torch = self._torch
        rng = np.random.default_rng(12345)
        nz, ny, nx = self.data.shape
        planes = self._normalise(_compute(self.data[[int(z) for z in self.val_planes]]))
        hr = torch.from_numpy(self._sample_hr(n, planes, rng)).to(self.device)
        phases = torch.from_numpy(rng.integers(0, len(self.D), n)).to(self.device)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            self.val_in = self._degrade(hr, phases, gen).unsqueeze(1)
        self.val_hr = hr.unsqueeze(1)
        self.cubic_psnr = _psnr(self.val_in, self.val_hr)

    # ------------------------------------------------------------- inference
    def _infer(self, x):
        torch = self._torch
        self.net.eval()
        with torch.inference_mode(), self._autocast():
            y = self.net(x)
        self.net.train()
        return y.float()

    def _autocast(self):
        import contextlib

        if self.device.startswith("cuda"):
            return self._torch.autocast("cuda", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()

    def validate(self) -> float:
        """PSNR (dB, on the normalised range) of the network on the held-out synthetic pairs."""
        return _psnr(self._infer(self.val_in), self.val_hr)

    def preview_input(self, max_width: int = 384) -> np.ndarray:
        """The cubic-interpolated xz plane used for the live preview, in input intensity units."""
        if self._preview_in is None:
            plane = np.asarray(_compute(self.data[:, self.preview_index, :max_width]), np.float32)
            pos = output_positions(plane.shape[0], self.config.factor)
            self._preview_in = interpolate_axis(plane, pos, order=self.method.order, axis=0)
        return self._preview_in

    def preview(self) -> np.ndarray:
        """The preview plane restored with the current weights, in input intensity units (float32)."""
        torch = self._torch
        x = torch.from_numpy(self._normalise(self.preview_input()))[None, None].to(self.device)
        y = self._infer(x)[0, 0].cpu().numpy()
        lo, hi = self.norm
        return y * (hi - lo) + lo

    # ---------------------------------------------------------------- model
    @property
    def model(self):
        """The current weights as a usable EMSRModel (a CPU copy)."""
        from .model import EMSRModel

        c = self.config
        cfg = {
            "method": c.method,
            "net": c.net,
            "size": c.size,
            "net_kwargs": c.net_kwargs,
            "factor": c.factor,
            "axis": c.axis,
            "order": self.method.order,
            "profile": c.profile,
            "profile_estimate": self.profile_estimate,
            "noise": c.noise,
            "noise_level": c.noise_level,
            "noise_estimate": self.noise_estimate,
            "norm": list(self.norm),
            "dtype": str(self.data.dtype),
            "step": self.step,
            "history": list(self.history),
            "train": {k: v for k, v in asdict(c).items() if k not in ("net_kwargs",)},
            "version": __version__,
        }
        sd = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
        return EMSRModel(cfg, sd)

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the current model (and optimizer state) atomically; returns the path."""
        path = path or self.config.checkpoint
        if not path:
            return None
        extra = {"optimizer": self.opt.state_dict()} if getattr(self, "opt", None) is not None else None
        return self.model.save(path, extra=extra)

    def _remember_if_best(self, val: float) -> None:
        """Keep a copy of the weights with the best held-out PSNR so far (cheap: small networks)."""
        if val > self._best[0]:
            sd = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self._best = (val, self.step, sd)

    def _diverged(self, val: float) -> bool:
        """Training blew up: held-out PSNR fell far below the best seen (or the loss is not finite)."""
        best, best_step, sd = self._best
        return sd is not None and best_step != self.step and not val >= best - DIVERGENCE_DB

    def _roll_back(self) -> int:
        """Go back to the best weights, forget Adam's moments and halve the learning rate; returns that step.

        A small-batch run can blow up (measured: rescnn/small, batch 8, lr 1e-3, medulla F = 4, seed 1: the
        held-out PSNR fell from +0.2 dB over cubic to -16 dB at step 350 and never came back, ending +0.26 dB on
        the volume where seed 0 reached +1.50 dB).
        """
        _, best_step, sd = self._best
        self.net.load_state_dict(sd)
        self.opt.state.clear()
        self._lr_scale *= 0.5
        log.warning("training diverged at step %d: back to the weights of step %d, learning rate x%.3g",
                    self.step, best_step, self._lr_scale)
        return best_step

    def _restore_best(self, tol: float = 0.05) -> None:
        """End of training: if the last weights score worse on held-out planes than the best seen (by more
        than ``tol`` dB), go back to the best ones. A noisy small-batch run can end in a worse state than it
        passed through; the history records the step the weights come from."""
        best, best_step, sd = self._best
        last = self.history[-1]["val_psnr"] if self.history else -math.inf
        if sd is not None and best_step != self.step and best > last + tol:
            self.net.load_state_dict(sd)
            self.history[-1]["restored_step"] = best_step
            self.history[-1]["val_psnr"] = best
            log.info("kept the weights of step %d (held-out PSNR %.2f dB > %.2f dB at the end)", best_step, best, last)

    def stop(self) -> None:
        """Ask the training loop to stop after the current step (the model stays usable)."""
        self._stop = True

    # ----------------------------------------------------------------- loop
    def run(self) -> Iterator[TrainEvent]:
        """Train; yields a TrainEvent after each step. Returns (StopIteration.value) the final EMSRModel."""
        torch = self._torch
        from .losses import LOSSES

        c = self.config
        loss_fn = LOSSES[self.method.loss or "l1"]
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        if self.optimizer_state:
            try:
                self.opt.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError):
                log.warning("optimizer state in the checkpoint does not fit; starting a fresh optimizer")
        self.net.train()
        steps = int(c.steps)
        budget = c.minutes * 60.0 if c.minutes else None
        start, total = self.start_step, self.start_step + steps
        cuda = self.device.startswith("cuda")
        t0 = time.perf_counter()
        loss_val = float("nan")
        last_ckpt = self.step
        while self.step < total and not self._stop:
            elapsed = time.perf_counter() - t0
            frac = (self.step - start) / steps
            if budget:
                frac = max(frac, elapsed / budget) if steps else elapsed / budget
                if elapsed >= budget:
                    break
            lr = c.lr * self._lr_scale * _schedule(frac)
            for g in self.opt.param_groups:
                g["lr"] = lr
            hr = torch.from_numpy(self._sample_hr(int(c.batch), self.pool, self.rng)).to(self.device, non_blocking=True)
            phases = torch.from_numpy(self.rng.integers(0, len(self.D), int(c.batch))).to(self.device)
            with torch.no_grad():
                x = self._degrade(hr, phases).unsqueeze(1)
            y = hr.unsqueeze(1)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                out = self.net(x)
            loss = loss_fn(out, y) if self.method.loss != "l1_pdl" else loss_fn(out, y, c.pdl_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            if not cuda or self.step % 10 == 0:
                loss_val = float(loss.detach())
            ev = TrainEvent(self.step, total, loss_val, lr, time.perf_counter() - t0)
            diverged = not math.isfinite(loss_val)
            if diverged or self.step % c.val_every == 0 or self.step == total:
                ev.val_psnr = self.validate() if not diverged else -math.inf
                ev.cubic_psnr = self.cubic_psnr
                self._remember_if_best(ev.val_psnr)
                entry = {"step": self.step, "loss": loss_val, "val_psnr": ev.val_psnr, "cubic_psnr": ev.cubic_psnr,
                         "elapsed": round(ev.elapsed, 2)}
                if self._diverged(ev.val_psnr):
                    entry["rolled_back_to"] = self._roll_back()
                    ev.val_psnr = self._best[0]
                    entry["val_psnr"] = ev.val_psnr
                self.history.append(entry)
            if c.preview_every and self.step % c.preview_every == 0:
                ev.preview = self.preview()
            if c.checkpoint and self.step - last_ckpt >= c.checkpoint_every:
                self.save_checkpoint()
                last_ckpt = self.step
            yield ev
        # final validation so the model's history ends with a score
        if not self.history or self.history[-1]["step"] != self.step:
            v = self.validate()
            self._remember_if_best(v)
            self.history.append(
                {"step": self.step, "loss": loss_val, "val_psnr": v, "cubic_psnr": self.cubic_psnr,
                 "elapsed": round(time.perf_counter() - t0, 2)}
            )
        self._restore_best()
        if c.checkpoint:
            self.save_checkpoint()
        h = self.history[-1]
        yield TrainEvent(self.step, max(total, self.step), loss_val, 0.0, time.perf_counter() - t0,
                         h["val_psnr"], h["cubic_psnr"], None, True)
        return self.model


def _schedule(frac: float, warmup: float = 0.03, floor: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to ``floor`` of the base learning rate, over progress ``frac``."""
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup:
        return (frac + 1e-3) / warmup
    t = (frac - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _psnr(pred, target) -> float:
    import torch

    mse = torch.mean((pred.float().clamp(-0.5, 1.5) - target.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def train(volume, config: TrainConfig | None = None, **kwargs):
    """Train to the end without events; returns the EMSRModel."""
    t = Trainer(volume, config, **kwargs)
    for _ in t.run():
        pass
    return t.model
