"""How long Reconstruct, Export and training take on this device, from speeds measured here.

Nothing here is a constant from another machine: the panel measures, in a worker,

- the **export's time** from one timed chunk of the export's own pipeline (its planes, deband setting, chunks
  and margins, reading and interpolating included: :func:`napari_emsr.estimates.estimate_export`, which the
  command line uses too), scaled to the export's chunk grid; until it is timed, the network speed below stands in;
- the **restoring speed** (:func:`measure_restore_speed`): a timed forward pass of the model's network
  (:func:`napari_emsr.model.predict`, the path reconstruction uses) on 2 to 8 planes (a CPU's batch) of the
  size a reconstruction restores (the output's z extent by a chunk's width with its margins), the best of two
  calls after an untimed one on the same planes (it builds the network's buffers and kernels); for
  interpolation-only methods the speed of the interpolation itself on a few rows of the stack;
- the **training speed** (:func:`measure_training_speed`): a few real training steps of the picked method,
  network, patch and device on the picked stack (after the trainer is built and two steps have run), then the
  speed of the user's own training run, once there is one.

A Reconstruct block's estimate is then the work it needs divided by the network's speed. The work is counted
the way :mod:`napari_emsr.reconstruct` does it (:func:`napari_emsr.estimates.chunk_work`): every chunk restores
its xz planes (its rows, each the output's z extent by the chunk's columns plus a margin each side) and/or its
yz planes (its columns by its rows plus margins); a fused chunk does both. Reading, interpolation and filtering
are not counted there; while a job runs the time left comes from its own measured rate instead. Once the
viewer has restored blocks of a pipeline (xz, yz or fused), the panel times that pipeline by its own blocks in
output voxels per second (:class:`napari_emsr.plugin.controllers.estimates.EstimatesController`): a block times
only its own pipeline, and an export (until a chunk of it is timed) only when the block held many planes (a
one-plane block pays a whole call's fixed costs for a few voxels).

Importing this module is cheap: torch is imported only by the measuring functions (run them in a worker).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_emsr.estimates import ExportEstimate, estimate_export
from napari_emsr.estimates import chunk_work as core_chunk_work

__all__ = ["ExportEstimate", "Speed", "chunk_work", "estimate_export", "measure_restore_speed",
           "measure_training_speed", "recommend_budget", "volume_work"]

#: Lateral context (px) each chunk reads around itself (:func:`napari_emsr.reconstruct.reconstruct`'s margin).
MARGIN = 32
#: The largest plane the speed probe times (px): larger planes cost proportionally (tiles of the same size).
PROBE_PIXELS = 512 * 512
#: Pixels the speed probe restores at most: 2 to 8 planes (8: a CPU's batch; fewer are slower per pixel).
PROBE_BUDGET = 1_000_000


@dataclass(frozen=True)
class Speed:
    """A measured speed: ``rate`` units of work per second, and how it was measured (for people).

    Attributes
    ----------
    rate : float
        Network pixels per second (``kind="network"``), output voxels per second (``"interpolation"``) or
        training steps per second (``"training"``).
    kind : str
        ``"network"``, ``"interpolation"`` or ``"training"``.
    device : str
        Where it was measured.
    how : str
        One line: what was timed.
    """

    rate: float
    kind: str
    device: str
    how: str

    def seconds(self, work: float) -> float:
        """Seconds for ``work`` units at this speed."""
        return float(work) / max(self.rate, 1e-12)


def output_depth(nz: int, factor: float) -> int:
    """The output's z extent (:func:`napari_emsr.geometry.output_length`)."""
    from napari_emsr.geometry import output_length

    return int(output_length(int(nz), float(factor)))


def _spans(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, max(1, int(chunk)))]


def chunk_work(zo: int, ny: int, nx: int, planes: str, y: tuple[int, int], x: tuple[int, int],
               margin: int = MARGIN) -> int:
    """Network pixels of one output chunk (rows ``y``, columns ``x``): :func:`napari_emsr.estimates.chunk_work`."""
    return core_chunk_work(zo, ny, nx, planes, y, x, margin)


def volume_work(shape: tuple[int, int, int], factor: float, planes: str, chunks: tuple[int, int],
                kind: str = "network", margin: int = MARGIN) -> tuple[int, int]:
    """The work of a whole reconstruction in ``chunks`` (rows, columns) and its number of chunks.

    Returns
    -------
    (int, int)
        Network pixels (``kind="network"``) or output voxels (``"interpolation"``), and the chunk count.
    """
    nz, ny, nx = (int(s) for s in shape)
    zo = output_depth(nz, factor)
    rows, cols = _spans(ny, chunks[0]), _spans(nx, chunks[1])
    if kind != "network":
        return zo * ny * nx, len(rows) * len(cols)
    work = sum(chunk_work(zo, ny, nx, planes, y, x, margin) for y in rows for x in cols)
    return int(work), len(rows) * len(cols)


def export_chunks(volume: Any, planes: str) -> tuple[int, int]:
    """The chunks an export writes in (:func:`napari_emsr.reconstruct.export` picks them the same way)."""
    from napari_emsr.reconstruct import export_chunks

    return export_chunks(volume, planes)


def block_work(data: Any, block: tuple[int, ...], factor: float, kind: str = "network") -> int:
    """The work of one block of a restored layer's data (a :class:`~napari_emsr.plugin.lazy_layer.RestoredPlanes`)."""
    zo, ny, nx = data.shape
    bounds = [np.cumsum((0, *c)) for c in data.chunks]
    y = (int(bounds[1][block[1]]), int(bounds[1][block[1] + 1]))
    x = (int(bounds[2][block[2]]), int(bounds[2][block[2] + 1]))
    if kind != "network":
        return zo * (y[1] - y[0]) * (x[1] - x[0])
    planes = "fuse" if data.planes in ("fuse", "uncertainty") else data.planes
    return chunk_work(zo, ny, nx, planes, y, x)


def probe_plane(shape: tuple[int, int, int], factor: float, planes: str = "xz") -> tuple[int, int]:
    """The plane the speed probe times: the output's z extent by a typical restored width (capped, see
    :data:`PROBE_PIXELS`)."""
    nz, ny, nx = (int(s) for s in shape)
    h = output_depth(nz, factor)
    w = min(ny if planes == "yz" else nx, 1024 + 2 * MARGIN)
    if h * w > PROBE_PIXELS:
        h = min(h, 512)
        w = max(16, min(w, PROBE_PIXELS // h))
    return int(h), int(w)


def measure_restore_speed(model: Any, shape: tuple[int, int, int], factor: float, device: str,
                          volume: Any = None) -> Speed:
    """Time the restoring network (or the interpolation) here; see the module docstring.

    Parameters
    ----------
    model : EMSRModel or str
        A trained model, or an interpolation method name.
    shape : (int, int, int)
        The input stack's shape.
    factor : float
        F.
    device : str
        Where reconstruction runs ("auto" included).
    volume : Volume, optional
        The stack (interpolation is timed on a few of its rows; random data otherwise).
    """
    from napari_emsr.device import resolve_device

    dev = resolve_device(device)
    if isinstance(model, str):
        from napari_emsr.geometry import output_positions
        from napari_emsr.interpolation import interpolate_axis

        nz, ny, nx = (int(s) for s in shape)
        rows = min(ny, 16)
        src = np.asarray(volume.data[:, :rows, :] if volume is not None else np.zeros((nz, rows, nx)), np.float32)
        from napari_emsr.methods import get_method

        order = get_method(model).order
        interpolate_axis(src[:, :1], output_positions(nz, factor), order, axis=0)
        t0 = time.perf_counter()
        out = interpolate_axis(src, output_positions(nz, factor), order, axis=0)
        spent = max(time.perf_counter() - t0, 1e-6)
        return Speed(out.size / spent, "interpolation", "cpu",
                     f"{model} interpolation of {rows} rows of this stack timed here")
    from napari_emsr.model import predict

    h, w = probe_plane(shape, factor)
    net = model.network(dev)
    n = int(np.clip(PROBE_BUDGET // (h * w), 2, 8))
    planes = np.random.default_rng(0).random((n, h, w), dtype=np.float32)
    # NOTE: not timed: the first call of a shape builds the network's buffers and the CPU library's kernels for it
    predict(net, planes, dev)
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    spent = math.inf
    for _ in range(2):  # NOTE: the best of two: the first calls in a process are slow (thread pool, allocator)
        t0 = time.perf_counter()
        predict(net, planes, dev)
        if dev.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        spent = min(spent, max(time.perf_counter() - t0, 1e-6))
    name = f"{model.config.get('net')} ({model.config.get('size')})"
    return Speed(planes.size / spent, "network", dev,
                 f"a timed forward pass of {name} on {n} planes of {h} x {w} px on {dev}")


def measure_training_speed(volume: Any, config: Any, steps: int = 4, warmup: int = 2) -> Speed:
    """Time ``steps`` real training steps of ``config`` on ``volume``; see the module docstring.

    The ``warmup`` steps before them are not timed (the first ones allocate, build the CPU library's kernels and
    fill the pair maker's caches), nor anything before the restoring network's first step (building the trainer,
    earlier stages), nor the last step (a run's last step also validates): the run is ``warmup + steps + 1``
    steps long and the clock runs from the end of step ``warmup`` to the end of step ``warmup + steps``.
    """
    from napari_emsr.train import Trainer
    from napari_emsr.train_config import RESTORE_STAGE

    steps, warmup = max(1, int(steps)), max(1, int(warmup))
    probe = config.resolved(None, steps=steps + warmup + 1, minutes=None, val_every=10**9, preview_every=0)
    trainer = Trainer(volume, probe)
    ends = []  # when each step of the restoring network ended
    for event in trainer.run():
        if event.stage != RESTORE_STAGE or event.done:
            continue
        ends.append(time.perf_counter())
        if len(ends) >= warmup + steps:
            break
    trainer.stop()
    timed = ends[warmup - 1 :]
    spent = timed[-1] - timed[0] if len(timed) > 1 else 0.0
    rate = (len(timed) - 1) / spent if spent > 0 else 0.0
    cfg = trainer.config
    how = (f"{len(timed) - 1} training steps of {cfg.net} ({cfg.size}), patch {cfg.patch}, batch {cfg.batch} on "
           f"{trainer.device} timed on this stack after {warmup} untimed ones")
    return Speed(rate, "training", str(trainer.device), how)


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss``); see :func:`napari_emsr.plugin.state.clock`."""
    from napari_emsr.plugin.state import clock as _clock

    return _clock(seconds)


def recommend_budget(speed: Speed, default_steps: int, cap_minutes: int = 60) -> tuple[str, int, str, str]:
    """A training budget for this device: the method's default steps when they fit in ``cap_minutes``,
    else ``cap_minutes`` minutes.

    Returns
    -------
    (str, int, str, str)
        ``("steps", n, text, detail)`` or ``("minutes", m, text, detail)``: ``text`` says it in a few words,
        ``detail`` why.
    """
    if speed.rate <= 0:
        return "minutes", cap_minutes, f"{cap_minutes} min", "no training speed measured"
    seconds = default_steps / speed.rate
    per = f"{speed.rate:.2g} steps/s"
    rule = (f"the method's default {default_steps} steps take {clock(seconds)} at {per} on {speed.device}; "
            f"recommended: the default when it takes at most {cap_minutes} min, else {cap_minutes} min")
    if seconds <= cap_minutes * 60:
        return "steps", int(default_steps), f"{default_steps} steps ≈ {clock(seconds)} here ({per})", rule
    steps = int(speed.rate * cap_minutes * 60)
    return "minutes", int(cap_minutes), f"{cap_minutes} min ≈ {steps} steps here ({per})", rule
