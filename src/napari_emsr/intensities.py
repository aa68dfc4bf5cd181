"""Intensities: the normalisation a network is trained in, a stack's robust range, and whether a stack's range
lies so far from a model's that the model must meet it in the stack's own range (another bit depth or scaling).

:class:`Normalisation` maps intensities to the network's range and back; :func:`robust_range` computes it once
on the training volume, and it is saved with the model (:class:`napari_emsr.model.EMSRModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

#: The percentiles a range is taken at.
LOW, HIGH = 0.5, 99.5
#: :func:`far_range`: a stack's span this many times narrower or wider than the model's is another scaling.
SPAN_RATIO = 8.0


@dataclass(frozen=True)
class Normalisation:
    """Intensities ``low`` and ``high`` are mapped to 0 and 1 for the network, and back on output."""

    low: float
    high: float

    def apply(self, a: Any) -> np.ndarray:
        """Input intensities -> network range (float32)."""
        return (np.asarray(a, np.float32) - self.low) / (self.high - self.low)

    def invert(self, a: np.ndarray) -> np.ndarray:
        """Network range -> input intensities (float32)."""
        return np.asarray(a, np.float32) * (self.high - self.low) + self.low

    def as_list(self) -> list[float]:
        return [float(self.low), float(self.high)]


def robust_range(data: Any, planes: int = 16, low: float = LOW, high: float = HIGH, seed: int = 0,
                 max_extent: int | None = None) -> Normalisation:
    """Intensity percentiles on a sample of planes along axis 0 (computed once, stored with the model).

    ``max_extent``: each plane is read every few pixels, at most this many a side (for :func:`far_range`'s
    check on a large volume: the whole plane's extent, as the model's range was taken, in bounded memory). A 2D
    image is one plane.
    """
    if data.ndim == 2:
        data = data[None]
    n = data.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, planes), replace=False))
    steps = [max(1, -(-int(size) // int(max_extent))) if max_extent else 1 for size in data.shape[1:]]
    window = tuple(slice(None, None, step) for step in steps)
    parts = [data[(int(i), *window)] for i in idx]
    if any(hasattr(p, "dask") for p in parts):  # one computation: a chunk holding several planes is read once
        import dask

        parts = dask.compute(*parts)
    sizes = [int(np.prod(np.shape(p))) for p in parts]
    sample = np.empty(sum(sizes), np.float32)
    at = 0
    for part, size in zip(parts, sizes):
        sample[at:at + size] = np.asarray(part, np.float32).ravel()
        at += size
    if not np.isfinite(sample).all():
        raise InputError("the volume contains NaN or infinite values; replace them (e.g. with 0) before training")
    lo, hi = np.percentile(sample, [low, high], overwrite_input=True)
    if hi <= lo:
        hi = lo + 1.0
    return Normalisation(float(lo), float(hi))


def far_range(model: Normalisation, stack: Normalisation) -> bool:
    """Whether a stack's intensity range (:func:`robust_range`) lies so far from the one a model was trained on
    that it is another bit depth or scaling: in the model's units (its range is 0 to 1) the stack's lies wholly
    outside 0 to 1, or spans :data:`SPAN_RATIO` times less or more. The model's own stack, or another of the same
    acquisition, stays inside (both ranges are taken over whole planes); a uint8 stack under a 16-bit model spans
    0.01, below 0."""
    a, b = (float(v) for v in model.apply(np.array([stack.low, stack.high])))
    return a > 1.0 or b < 0.0 or not 1.0 / SPAN_RATIO <= b - a <= SPAN_RATIO


def range_note(stack: Normalisation, model: Normalisation, then: str) -> str:
    """The sentence said when a stack's range is far from a model's (:func:`far_range`); ``then``: what is done."""
    return (f"the stack's intensities ({LOW:g}-{HIGH:g} %: {stack.low:.4g} to {stack.high:.4g}) lie far from the ones "
            f"the model was trained on ({model.low:.4g} to {model.high:.4g}): {then}")
