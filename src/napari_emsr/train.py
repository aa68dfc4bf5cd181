"""Training on the volume itself, as a generator of small events; the trainer knows no method.

The trainer asks the method (:mod:`napari_emsr.methods`) for everything method-specific: its earlier training
stages, and a pair-maker that gives training batches, held-out validation pairs and the preview plane. It runs
the stages in order (each with its own name, steps and events), then trains the restoring network on the
pair-maker's batches, validating on the held-out pairs against their interpolation, with warm-up and cosine
decay, divergence roll-back and keep-best. One event stream serves the command line and the panel; one model
file holds every stage's weights.

``Trainer.run()`` yields a :class:`TrainEvent` after every step and checks for a stop request between steps;
``Trainer.model`` is a usable :class:`~napari_emsr.model.EMSRModel` at any time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import EMSRError, InputError
from .geometry import check_axis, resolve_factor, to_front
from .methods import get_method
from .methods.context import PairContext
from .train_config import MAX_LR, MAX_SEED, RESTORE_STAGE, TrainConfig, TrainEvent
from .train_memory import _available_memory, _bytes_per_patch, _state_bytes

__all__ = ["MAX_LR", "MAX_SEED", "RESTORE_STAGE", "TrainConfig", "TrainEvent", "Trainer", "train"]

log = logging.getLogger(__name__)

#: Held-out PSNR this far (dB) below the best seen means training diverged: roll back, halve the learning rate.
DIVERGENCE_DB = 1.0
def _resumed_options(method, rc: dict) -> dict:
    """The options a saved model was trained with (older files kept profile and noise at the top level)."""
    if isinstance(rc.get("options"), dict):
        return {k: v for k, v in rc["options"].items() if method.option(k) is not None}
    old = {"profile": rc.get("profile")}
    if "noise_level" in rc:
        old.update(noise=rc.get("noise", "none"), noise_level=float(rc["noise_level"]))
    return {k: v for k, v in old.items() if v is not None and method.option(k) is not None}


class Trainer:
    """Train a method on one anisotropic volume.

    Parameters
    ----------
    volume : Volume or array
        The anisotropic stack (z, y, x) (or with the anisotropic axis ``config.axis``).
    config : TrainConfig
        Options; ``factor`` defaults to the one the voxel size implies.
    resume : EMSRModel or path, optional
        Continue from this model or checkpoint (weights of every stage, step count, history, options; the
        optimizer state if saved).
    preview_index : int, optional
        The y index of the xz plane re-inferred for the live preview (default: the middle).
    """

    def __init__(self, volume, config: TrainConfig | None = None, *, resume=None, preview_index: int | None = None):
        import torch

        from .device import resolve_device
        from .intensities import far_range, range_note, robust_range
        from .io import as_volume
        from .model import EMSRModel
        from .nets import build_net, grid_of, net_sizes

        self._torch = torch
        config = config or TrainConfig()
        device = resolve_device(config.device)
        method = get_method(config.method)
        config = config.resolved(device)  # checks the method trains and its options
        vol = volume if hasattr(volume, "spacing") and hasattr(volume, "data") else as_volume(volume)
        axis = check_axis(config.axis)
        data = to_front(vol.data, axis)
        factor = resolve_factor(config.factor, vol.spacing, axis)
        self.optimizer_state = None
        if resume is not None and not isinstance(resume, EMSRModel):
            resume, extra = EMSRModel.load(resume, with_extra=True)
            self.optimizer_state = extra.get("optimizer")
        fixed: dict[str, Any] = {"factor": factor, "axis": axis}
        if resume is not None:
            resume.check_compatible(factor, axis)
            rc = resume.config
            if rc.get("method", method.name) != method.name:
                raise InputError(
                    f"this model was trained with method {rc.get('method')!r}, not {method.name!r}: resume it with "
                    f"--method {rc.get('method')}, or train a new model"
                )
            fixed.update(net=rc["net"], net_kwargs=rc.get("net_kwargs", {}), size=rc.get("size"),
                         options={**config.options, **_resumed_options(method, rc)})
        else:
            sizes = net_sizes(config.net)
            if config.size and config.size not in sizes:
                raise InputError(f"unknown size {config.size!r} for network {config.net!r}: choose {', '.join(sizes)}")
            kwargs = dict(sizes.get(config.size, {})) if config.size else {}
            kwargs.update(config.net_kwargs)
            if grid_of(config.net) == "sections":  # the section spacing is part of such a network
                kwargs["factor"] = factor
            fixed["net_kwargs"] = kwargs
        self.config = config = config.resolved(device, **fixed)
        from .io import same_place

        source = getattr(vol, "source", None)
        if config.checkpoint and source and Path(str(source)).exists():
            if same_place(config.checkpoint, str(source)):
                raise InputError(f"the checkpoint {config.checkpoint} is the input volume: choose another path")
        if config.checkpoint:  # where the checkpoints go is checked now, not after the first 250 steps
            from .io.safety import check_output_path

            check_output_path(config.checkpoint, what="checkpoint")
        self.method = method
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
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.norm = stack = robust_range(data, seed=config.seed)
        self._notes: list[str] = []
        if resume is not None:
            # NOTE: the network works in the model's units; a stack far outside its range (another bit depth or
            # scaling) would train on intensities it never saw: it goes on in the stack's own range instead
            model_norm = self.norm = resume.norm
            if far_range(model_norm, stack):
                self.norm = stack
                self._notes.append(range_note(stack, model_norm, "training goes on with the stack scaled by its own "
                                                                 "range, which the model keeps"))

        self.net = build_net(config.net, **config.net_kwargs)
        self.start_step = 0
        self.history: list[dict] = []
        self.stage_states: dict[str, dict] = {}
        self.stages_done: list[str] = []
        self.stage_log: dict[str, dict] = {}  # what each stage did (steps, last loss), saved with the model
        if resume is not None:
            self.net.load_state_dict(resume.state_dict)
            self.start_step = resume.step
            self.history = list(resume.history)
            self.stage_states = dict(resume.stages)
            self.stages_done = [s["name"] for s in resume.config.get("stages", []) if s.get("done")]
            self.stage_log = {s["name"]: {k: v for k, v in s.items() if k not in ("name", "steps", "done")}
                              for s in resume.config.get("stages", [])}
        self.net.to(self.device)
        from .device import fast_precision

        self._fast = fast_precision(self.device)  # bf16 autocast and channels-last (CUDA; a CPU with bf16 units)
        if self._fast:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.step = self.start_step
        self._stop = False
        self._best: tuple[float, int, dict | None] = (-math.inf, -1, None)
        self._lr_scale = 1.0
        ys = ny // 2 if preview_index is None else int(np.clip(preview_index, 0, ny - 1))
        self.preview_index = ys
        self.ctx = PairContext(data=data, factor=config.factor, order=method.order, patch=patch, norm=self.norm,
                               device=device, rng=self.rng, options=dict(config.options), preview_index=ys,
                               train={"net": config.net, "size": config.size, "batch": config.batch, "lr": config.lr,
                                      "seed": config.seed, "threads": config.threads})
        self.ctx.load_pool()
        for stage in self.stages:  # a resumed run: finished stages come back as they were
            if stage.name in self.stages_done:
                runner = stage.build(self.ctx)
                runner.load_state_dict(self.stage_states[stage.name])
                self.ctx.stages[stage.name] = runner
        self.pairs: Any = None
        self.val_in = self.val_hr = None
        self.cubic_psnr: float | None = None
        if all(s.name in self.stages_done for s in self.stages):
            self._make_pairs()

    # ---------------------------------------------------------------- pairs
    def _no_section_grid(self) -> str:
        return (f"network {self.config.net!r} restores from the section grid, which the training pairs of method "
                f"{self.config.method!r} do not keep (the isotropic method's do): choose another network (--net "
                "rescnn or uformer)")

    def _make_pairs(self) -> None:
        """Build the method's pair-maker (after its earlier stages) and fix the validation pairs."""
        from .nets import grid_of

        self.pairs = self.method.pairs(self.ctx)
        if grid_of(self.config.net) == "sections" and not getattr(self.pairs, "section_grid", False):
            raise InputError(self._no_section_grid())
        attach = getattr(self.pairs, "attach", None)
        if attach is not None:  # the restorer carries what earlier stages learned (e.g. gpemsr's frozen prior)
            attach(self.net)
        resolved = self.info.get("options")
        if resolved:
            self.config = replace(self.config, options=dict(resolved))
        self.val_in, self.val_hr = (np.asarray(a, np.float32) for a in self.pairs.validation())
        self.cubic_psnr = _psnr(self.val_in, self.val_hr)

    @property
    def info(self) -> dict:
        """What the pair-maker decided (e.g. the estimated section profile); empty before it exists."""
        return dict(getattr(self.pairs, "info", None) or {})

    @property
    def notes(self) -> list[str]:
        """Lines for the user about what the trainer and the method decided on this stack."""
        return [*self._notes, *self.info.get("notes", [])]

    @property
    def stages(self) -> list:
        """The method's stages that run with these options (``Stage.when``), in order."""
        return [s for s in self.method.stages if s.active(self.config.options)]

    @property
    def stage_names(self) -> list[str]:
        """Every stage of this run, the restoring network last."""
        return [s.name for s in self.stages] + [RESTORE_STAGE]

    # ------------------------------------------------------------- inference
    def validate(self) -> float:
        """PSNR (dB, on the normalised range) of the network on the held-out pairs."""
        from .model import predict

        return _psnr(predict(self.net, self.val_in, self.device, batch=len(self.val_in)), self.val_hr)

    def preview_input(self) -> np.ndarray:
        """The interpolated xz plane used for the live preview, in input intensity units."""
        return self.ctx.preview_input()

    def preview(self) -> np.ndarray:
        """The preview plane restored with the current weights, in input intensity units (float32)."""
        from .model import predict

        make = getattr(self.pairs, "preview", None)
        x = make() if make is not None else self.norm.apply(self.preview_input())
        return self.norm.invert(predict(self.net, np.asarray(x, np.float32)[None], self.device)[0])

    # ---------------------------------------------------------------- model
    @property
    def model(self):
        """The current weights (of every stage) as a usable EMSRModel (a CPU copy)."""
        from .model import EMSRModel
        from .nets import grid_of

        c = self.config
        info = {k: v for k, v in self.info.items() if k not in ("options", "notes")}
        cfg = {
            **info,  # first: what the pair-maker reports never replaces the keys below
            "method": c.method,
            "net": c.net,
            "size": c.size,
            "net_kwargs": dict(c.net_kwargs),
            "grid": grid_of(c.net),  # where the network's body runs: the output rows or the section rows
            "factor": c.factor,
            "axis": c.axis,
            "order": self.method.order,
            "options": dict(c.options),
            "stages": [{"name": s.name, "steps": self._stage_steps(s), "done": s.name in self.stages_done,
                        **self.stage_log.get(s.name, {})} for s in self.stages],
            "norm": self.norm.as_list(),
            "dtype": str(self.data.dtype),
            "step": self.step,
            "history": list(self.history),
            "train": {k: v for k, v in asdict(c).items() if k not in ("net_kwargs",)},
            "version": __version__,
        }
        sd = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
        from .model import cpu_copy

        stages = {n: cpu_copy(st) for n, st in self.stage_states.items()}
        return EMSRModel(cfg, sd, stages)

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the current model (and optimizer state) atomically; returns the path."""
        path = path or self.config.checkpoint
        if not path:
            return None
        extra = {"optimizer": self.opt.state_dict()} if getattr(self, "opt", None) is not None else None
        return self.model.save(path, extra=extra)

    def _checkpoint(self) -> None:
        """A checkpoint during training: one that cannot be written (the disk filled up, the folder became
        read-only) is reported and training goes on; the trained model is what must not be lost, and its save at
        the end keeps it somewhere writable if its own path fails."""
        try:
            self.save_checkpoint()
        except EMSRError as exc:
            log.warning("checkpoint not saved at step %d: %s", self.step, exc)

    def model_bytes(self) -> int:
        """About the size of a model file (weights of every stage) with the optimizer state of a checkpoint."""
        torch = self._torch
        n = sum(int(v.numel()) * v.element_size() for v in self.net.state_dict().values()
                if isinstance(v, torch.Tensor))
        return 3 * n + (1 << 20) + 3 * _state_bytes(self.stage_states)

    def check_memory(self) -> None:
        """Refuse, before the first step, a batch whose activations cannot fit in this machine's memory (a CPU
        would swap for minutes or be killed): the bytes one patch needs are measured with one forward pass."""
        if not str(self.device).startswith("cpu"):
            return  # a GPU says so itself (torch.OutOfMemoryError), at once; it is caught in run()
        per_patch = _bytes_per_patch(self._torch, self.net, self.patch)
        free = _available_memory()
        if not per_patch or not free:
            return
        batch = int(self.config.batch)
        need = batch * per_patch
        if need > free:
            fits = max(1, int(free * 0.5 // per_patch))
            raise InputError(
                f"--batch {batch} needs about {need / 1e9:.1f} GB of memory for patches of {self.patch} x "
                f"{self.patch} on the CPU, and {free / 1e9:.1f} GB is free: give a smaller batch, e.g. --batch "
                f"{min(fits, max(1, batch // 2))}"
            )

    def _out_of_memory(self, exc: BaseException) -> InputError:
        b = int(self.config.batch)
        return InputError(
            f"out of memory training with --batch {b} (patches of {self.patch} x {self.patch}) on {self.device} "
            f"({type(exc).__name__}): give a smaller batch, e.g. --batch {max(1, b // 2)} (or a smaller --patch)"
        )

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

        A small-batch run can blow up (held-out PSNR falling far below interpolation and never coming back);
        the README's seed runs of ``benchmarks/bench_quality.py`` show one.
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
    def _stage_steps(self, stage) -> int:
        return int(self.config.options.get(f"{stage.name}_steps", stage.steps))

    def _run_stages(self, t0: float, budget: float | None) -> Iterator[TrainEvent]:
        """Train (or, when resumed, load) the method's stages before the restoring network."""
        n = len(self.stage_names)
        # NOTE: a time budget is shared by the stages' default step counts (the restorer's default, not --steps,
        # which a time-budgeted run sets high), so each stage gets its intended share of the minutes.
        restore_steps = self.method.training_defaults()["steps"] if budget else int(self.config.steps)
        steps_all = sum(self._stage_steps(s) for s in self.stages) + int(restore_steps)
        share = 0.0
        for i, stage in enumerate(self.stages):
            steps = self._stage_steps(stage)
            share += steps / max(steps_all, 1)
            if stage.name in self.stages_done:
                continue
            runner = stage.build(self.ctx)
            if stage.name in self.stage_states:  # a stage stopped part-way goes on from where it was
                runner.load_state_dict(self.stage_states[stage.name])
            log_entry = self.stage_log.setdefault(stage.name, {"trained_steps": 0, "loss": float("nan")})
            s = int(log_entry.get("trained_steps", 0))
            while s < steps and not self._stop:
                if budget and time.perf_counter() - t0 >= budget * share:
                    break
                metrics = runner.step()
                s += 1
                log_entry.update(trained_steps=s, loss=float(metrics.get("loss", float("nan"))))
                yield TrainEvent(s, steps, log_entry["loss"], float(metrics.get("lr", 0.0)),
                                 time.perf_counter() - t0, stage=stage.name, stage_index=i, stage_count=n)
            self.stage_states[stage.name] = runner.state_dict()
            log_entry["elapsed"] = round(time.perf_counter() - t0, 2)
            if self._stop:
                return
            if s >= steps:  # a stage cut short by the time budget is not done: a resume trains it further
                self.stages_done.append(stage.name)
            self.ctx.stages[stage.name] = runner

    def run(self) -> Iterator[TrainEvent]:
        """Train; yields a TrainEvent after each step of each stage. Returns (StopIteration.value) the model."""
        torch = self._torch
        from .losses import get_loss
        from .model import autocast

        c = self.config
        budget = c.minutes * 60.0 if c.minutes else None
        t0 = time.perf_counter()
        n_stages = len(self.stage_names)
        self.check_memory()  # before the first step of any stage: a batch that cannot fit is refused now
        yield from self._run_stages(t0, budget)
        if self.pairs is None and not self._stop:
            self._make_pairs()
            c = self.config
        start, steps = self.start_step, int(c.steps)
        total = start + steps
        if self.pairs is None:  # stopped before the restoring network's turn: keep what the stages learned
            if c.checkpoint:
                self._checkpoint()
            yield TrainEvent(self.step, total, float("nan"), 0.0, time.perf_counter() - t0, done=True,
                             stage=RESTORE_STAGE, stage_index=n_stages - 1, stage_count=n_stages)
            return self.model
        loss_fn = get_loss(self.method.loss or "l1")
        loss_kwargs = {arg: c.options[opt] for arg, opt in self.method.loss_args.items()}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        if self.optimizer_state:
            try:
                self.opt.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError):
                log.warning("optimizer state in the checkpoint does not fit; starting a fresh optimizer")
        self.net.train()
        cuda = self.device.startswith("cuda")
        t_restore = time.perf_counter()
        restore_budget = budget - (t_restore - t0) if budget else None
        stage = {"stage": RESTORE_STAGE, "stage_index": n_stages - 1, "stage_count": n_stages}
        loss_val = float("nan")
        last_ckpt = self.step
        while self.step < total and not self._stop:
            elapsed = time.perf_counter() - t_restore
            frac = (self.step - start) / steps
            if restore_budget is not None:
                frac = max(frac, elapsed / restore_budget) if steps else elapsed / restore_budget
                if elapsed >= restore_budget:
                    break
            lr = c.lr * self._lr_scale * _schedule(frac)
            for g in self.opt.param_groups:
                g["lr"] = lr
            try:
                x, y = self.pairs.batch(int(c.batch))
                if self._fast:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(self.device):
                    out = self.net(x)
                loss = loss_fn(out, y, **loss_kwargs)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            except MemoryError as exc:
                raise self._out_of_memory(exc) from None
            except RuntimeError as exc:  # torch.OutOfMemoryError, or the CPU allocator's "can't allocate memory"
                text = str(exc).lower()
                if "out of memory" not in text and not ("memory" in text and "allocat" in text):
                    raise
                raise self._out_of_memory(exc) from None
            self.step += 1
            if not cuda or self.step % 10 == 0:
                loss_val = float(loss.detach())
            ev = TrainEvent(self.step, total, loss_val, lr, time.perf_counter() - t0, **stage)
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
                self._checkpoint()
                last_ckpt = self.step
            yield ev
        # final validation so the model's history ends with a score
        if not self.history or self.history[-1].get("step") != self.step:
            v = self.validate()
            self._remember_if_best(v)
            self.history.append(
                {"step": self.step, "loss": loss_val, "val_psnr": v, "cubic_psnr": self.cubic_psnr,
                 "elapsed": round(time.perf_counter() - t0, 2)}
            )
        self._restore_best()
        if c.checkpoint:
            self._checkpoint()
        h = self.history[-1]
        yield TrainEvent(self.step, max(total, self.step), loss_val, 0.0, time.perf_counter() - t0,
                         h["val_psnr"], h["cubic_psnr"], None, True, **stage)
        return self.model


def _schedule(frac: float, warmup: float = 0.03, floor: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to ``floor`` of the base learning rate, over progress ``frac``."""
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup:
        return (frac + 1e-3) / warmup
    t = (frac - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR (dB) on the network's 0-1 range; predictions clipped to [-0.5, 1.5] so one outlier cannot dominate."""
    mse = float(np.mean((np.clip(pred, -0.5, 1.5) - target) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def train(volume, config: TrainConfig | None = None, **kwargs):
    """Train to the end without events; returns the EMSRModel."""
    t = Trainer(volume, config, **kwargs)
    for _ in t.run():
        pass
    return t.model
