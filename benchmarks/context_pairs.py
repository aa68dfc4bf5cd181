"""Experimental multi-slice context for the isotropic method, measured by ``bench_large_factors.py`` and not part
of the package: :class:`ContextPairs` (training pairs with the neighbouring sections) and :func:`context_stacks`
(the neighbours taken at application), for the network of ``context_arch.py``."""

from __future__ import annotations

import numpy as np

from napari_emsr.methods.isotropic.pairs import N_VALIDATION, LateralPairs


class ContextPairs(LateralPairs):
    """Self-supervised pairs with multi-slice context: the input is the patch and the same patch in the ``context``
    sections on either side (2N+1 channels, the patch in the middle), each degraded along its rows like z with
    the same sampling phase and profile (independent noise); the target is the middle patch.

    Training and application context (see ``context_arch.py``): in a pair the axis perpendicular
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
