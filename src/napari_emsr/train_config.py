"""What a training run is given (:class:`TrainConfig`) and what it reports (:class:`TrainEvent`); the trainer is
:mod:`napari_emsr.train`, which re-exports both."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError
from .methods import DEFAULT_METHOD, get_method

#: The name of the last stage of every trained method: the restoring network.
RESTORE_STAGE = "restore"
#: The largest seed: numpy's and torch's generators both take 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1
#: The largest peak learning rate: Adam above 1 only diverges (and 1e308 overflows float32 in the optimizer).
MAX_LR = 1.0


#: The step count of a run given minutes and no steps: the time budget alone ends it (the default step count would
#: otherwise end a fast machine's run early: 3,000 steps take about 4 of 10 minutes on a CPU with bf16 units).
UNCAPPED_STEPS = 10**9


@dataclass(frozen=True)
class TrainConfig:
    """Training options; ``None`` means the method's default (``Method.training_defaults()``), except ``steps``
    with ``minutes`` given: then the minutes alone end the run (:data:`UNCAPPED_STEPS`).

    ``options`` holds the method's own options (``Method.options``, e.g. the isotropic method's ``profile``).
    A config is not changed after it is made: :meth:`resolved` returns a new one with the defaults filled in.
    """

    factor: float | None = None
    axis: int = 0
    method: str = DEFAULT_METHOD
    net: str | None = None
    size: str | None = None
    net_kwargs: Mapping[str, Any] = field(default_factory=dict)
    steps: int | None = None
    minutes: float | None = None
    patch: int | None = None
    batch: int | None = None
    lr: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    val_every: int = 50
    preview_every: int = 100
    checkpoint: str | None = None
    checkpoint_every: int = 250
    threads: int | None = None

    def resolved(self, device: str | None = None, **fixed: Any) -> TrainConfig:
        """A new config with the method's defaults filled in (``batch_cuda`` instead of ``batch`` on CUDA),
        its options checked and completed, and ``fixed`` fields (e.g. the factor found in the file) set."""
        m = get_method(self.method)
        if not m.trains:
            raise InputError(
                f"method {m.name!r} needs no training; apply it directly (emsr reconstruct --method {m.name})"
            )
        c = replace(self, **fixed)
        check_numbers(c)
        defaults = m.training_defaults()
        batch_cuda = defaults.pop("batch_cuda", None)
        values: dict[str, Any] = {"net": c.net or m.net, "size": c.size or m.size,
                                  "options": m.resolve_options(c.options)}
        if c.batch is None and batch_cuda and device is not None and device.startswith("cuda"):
            values["batch"] = batch_cuda
        if c.steps is None and c.minutes:  # a time budget alone: the minutes, not the default step count, decide
            values["steps"] = UNCAPPED_STEPS
        for k, v in defaults.items():
            if getattr(c, k) is None and k not in values:
                values[k] = v
        return replace(c, **values)


@dataclass
class TrainEvent:
    """What the trainer reports after a step (small: safe to send to a GUI thread).

    ``step`` and ``total`` count the steps of the current stage (``stage``, number ``stage_index`` of
    ``stage_count``); the restoring network's steps continue across resumed runs.
    """

    step: int
    total: int
    loss: float
    lr: float
    elapsed: float
    val_psnr: float | None = None
    cubic_psnr: float | None = None
    preview: np.ndarray | None = None
    done: bool = False
    stage: str = RESTORE_STAGE
    stage_index: int = 0
    stage_count: int = 1

    @property
    def gain(self) -> float | None:
        """PSNR gain of the network over interpolation on held-out planes (dB)."""
        if self.val_psnr is None or self.cubic_psnr is None:
            return None
        return self.val_psnr - self.cubic_psnr


def check_numbers(c: TrainConfig) -> None:
    """Refuse budgets and sizes that cannot work, naming the command-line option (None means the default)."""
    def bad(flag: str, value: Any, what: str) -> InputError:
        return InputError(f"--{flag} {value!r} cannot work: give {what}")

    ints = {"steps": (c.steps, 1), "patch": (c.patch, 16), "batch": (c.batch, 1), "val-every": (c.val_every, 1),
            "checkpoint-every": (c.checkpoint_every, 1), "preview-every": (c.preview_every, 0),
            "threads": (c.threads, 1)}
    for flag, (value, low) in ints.items():
        if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
            raise bad(flag, value, f"a whole number of at least {low}")
    for flag, value in (("minutes", c.minutes), ("lr", c.lr)):
        if value is not None and not (math.isfinite(float(value)) and float(value) > 0):
            raise bad(flag, value, "a positive number")
    if c.lr is not None and float(c.lr) > MAX_LR:
        raise bad("lr", c.lr, f"a learning rate of at most {MAX_LR:g} (Adam's usual ones are 1e-4 to 1e-2)")
    seed = c.seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise bad("seed", seed, f"a whole number from 0 to {MAX_SEED}")
