"""Section consistency: the restored volume made to agree with the sections it was restored from.

A stack's section ``i`` is the tissue blurred along z by the section profile ``h`` and sampled at output row
``i * F`` (:mod:`napari_emsr.degrade`): ``s = D x`` with ``D`` the blur-then-sample operator. A restoration ``y``
need not satisfy it: a network trained on lateral planes degraded like z leaves each section's average over its
thickness a little off. :class:`Consistency` moves ``y`` by the smallest change that makes it agree,

    y' = y + D^T (D D^T)^-1 (s - D y),

column by column along z (the orthogonal projection onto the volumes the stack could have come from). When ``D`` is
the stack's real profile and the sections are noise-free, the truth is one of those volumes, so the projection never
moves ``y`` away from it (a projection onto a convex set containing the truth is non-expansive towards it); how much
it helps depends on how far ``y`` was from agreeing.

Only for thick sections: with a point profile (or a thin fitted one) the change lands on the section rows alone
and the result bands with the section period (the rows between keep the network's estimate); :func:`applies`
says when it is used. Numpy and scipy only; columns are independent, so a chunk of whole z columns is projected
exactly, whatever its lateral size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from .degrade import profile_kernel
from .geometry import output_length

#: A profile is thick enough when a section keeps at most this share of a single plane (the sum of its kernel's
#: squared weights: 1 for point sampling, 1 / F for a slab of F).
MAX_OWN_SHARE = 0.5


def kernel_of(options: dict[str, Any], factor: float) -> np.ndarray | None:
    """The section kernel a model was trained with (its ``config["options"]``), or None when there is none to
    project with: point sampling, or a profile without a fixed kernel (mixed, learned, judged and not resolved)."""
    profile = options.get("profile", "point")
    if profile == "fitted":
        try:
            return profile_kernel((float(options["thickness"]), float(options["softness"])), factor)
        except (KeyError, TypeError, ValueError):
            return None
    if profile in ("slab", "gaussian"):
        return profile_kernel(profile, factor)
    return None


def applies(kernel: np.ndarray | None) -> bool:
    """Whether projecting with ``kernel`` is worth it: a profile at least about half a section thick."""
    if kernel is None:
        return False
    return float((np.asarray(kernel, np.float64) ** 2).sum()) <= MAX_OWN_SHARE


def _operator(n_sections: int, factor: float, kernel: np.ndarray | None) -> sparse.csr_matrix:
    """``D`` (sections x output rows): each output row blurred by ``kernel`` (mirror boundary, as
    :func:`~napari_emsr.degrade.section_blur`), sampled at ``i * F`` (linearly between rows for a fractional F).
    :func:`inner_sections` says which rows of it describe the stack (the others reach past the output's ends)."""
    n = output_length(n_sections, factor)
    k = np.ones(1) if kernel is None else np.asarray(kernel, np.float64)
    r = len(k) // 2
    rows, cols, vals = [], [], []
    for i in range(n_sections):
        pos = i * float(factor)
        lo = int(math.floor(pos + 1e-9))
        frac = pos - lo
        for base, wb in ((lo, 1.0 - frac), (lo + 1, frac)):
            if wb <= 1e-12 or base >= n:
                continue
            for j, w in enumerate(k):
                z = base + j - r
                if n > 1:  # whole-sample mirror (scipy's "mirror"): -1 -> 1, n -> n - 2
                    period = 2 * (n - 1)
                    z = z % period
                    z = period - z if z >= n else z
                else:
                    z = 0
                rows.append(i)
                cols.append(z)
                vals.append(wb * w)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_sections, n))


def inner_sections(n_sections: int, factor: float, kernel: np.ndarray | None) -> np.ndarray:
    """The sections whose profile lies within the output rows. A section at either end integrates tissue beyond
    the volume (the profile's half width past its first or last row), which the output does not hold: the mirror
    the operator assumes there is not the tissue, so those sections are not constraints."""
    n = output_length(n_sections, factor)
    r = 0 if kernel is None else len(kernel) // 2
    pos = np.arange(n_sections) * float(factor)
    return np.flatnonzero((np.floor(pos + 1e-9) - r >= 0) & (np.ceil(pos - 1e-9) + r <= n - 1))


class Consistency:
    """The projection of restored volumes of a stack of ``n_sections`` onto those that agree with it (see the module
    docstring); built once per stack and profile, applied to any number of chunks of whole z columns."""

    def __init__(self, n_sections: int, factor: float, kernel: np.ndarray | None) -> None:
        self.n_sections = int(n_sections)
        self.factor = float(factor)
        self.n_out = output_length(self.n_sections, self.factor)
        self.inner = inner_sections(self.n_sections, self.factor, kernel)
        self.D = _operator(self.n_sections, self.factor, kernel)[self.inner]
        self.Dt = self.D.T.tocsr()
        self._lu = splu((self.D @ self.Dt).tocsc())

    def apply(self, restored: np.ndarray, sections: np.ndarray) -> np.ndarray:
        """``restored`` (output rows, ...) moved to agree with ``sections`` (n_sections, ...), both in the same
        intensities; float32, the shape of ``restored``."""
        y = np.asarray(restored, np.float32)
        s = np.asarray(sections, np.float32)
        if y.shape[0] != self.n_out or s.shape[0] != self.n_sections or y.shape[1:] != s.shape[1:]:
            raise ValueError(f"a restoration of {self.n_out} rows and {self.n_sections} sections of the same lateral "
                             f"shape expected, got {y.shape} and {s.shape}")
        cols = int(np.prod(y.shape[1:], dtype=np.int64))
        flat = y.reshape(self.n_out, cols)
        residual = s.reshape(self.n_sections, cols)[self.inner].astype(np.float64) - self.D @ flat
        correction = self.Dt @ self._lu.solve(residual)
        return (flat + correction.astype(np.float32)).reshape(y.shape)

    def disagreement(self, restored: np.ndarray, sections: np.ndarray) -> float:
        """Root mean square of ``sections - D restored`` over the inner sections (0 after :meth:`apply`, up to
        rounding)."""
        y = np.asarray(restored, np.float64).reshape(self.n_out, -1)
        s = np.asarray(sections, np.float64).reshape(self.n_sections, -1)[self.inner]
        return float(np.sqrt(np.mean((s - self.D @ y) ** 2)))
