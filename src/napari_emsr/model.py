"""The saved model: weights, a JSON-able config, the normalisation, and the one path that runs a network.

A model file is a ``torch.save`` of ``{"format": "napari-emsr-model", "config": <JSON string>, "state_dict": ...,
"stages": {stage name: state_dict}}`` (and, in checkpoints, ``"optimizer"``). It is read with
``torch.load(weights_only=True)``: a model file from a stranger cannot run code when it is opened.

:func:`predict` is the only place a restoring network is run for inference (eval mode, inference mode, bf16
autocast and channels-last on CUDA, overlapping tiles blended smoothly): validation and the live preview during
training and every chunk of a reconstruction go through it. :class:`Normalisation` (:mod:`napari_emsr.intensities`)
maps intensities to the network's range and back; it is computed once on the training volume and saved with the
model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import EMSRError, InputError, ModelError
from .intensities import Normalisation, far_range, range_note, robust_range

FORMAT = "napari-emsr-model"
#: Planes larger than this (px) are restored in overlapping tiles, blended over ``TILE_OVERLAP`` px.
TILE = 512
TILE_OVERLAP = 32


# ------------------------------------------------------------------------------------------------ predict
def autocast(device: str):
    """bf16 autocast on CUDA, and on a CPU with bf16 matrix instructions (:func:`napari_emsr.device.cpu_bf16`);
    nothing elsewhere (the training step and :func:`predict` share it)."""
    from .device import fast_precision

    if fast_precision(device):
        import torch

        return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict(
    net: Any,
    planes: np.ndarray,
    device: str = "cpu",
    *,
    tile: int = TILE,
    overlap: int = TILE_OVERLAP,
    batch: int | None = None,
    stop: Callable[[], Any] | None = None,
) -> np.ndarray:
    """Run a restoring network on (N, H, W) normalised float32 planes; returns (N, H, W) float32.

    The network is put in eval mode for the call (and back in training mode after, if it was); inference
    mode; on CUDA bf16 autocast and channels-last. Planes larger than ``tile`` are cut into tiles that
    overlap by ``overlap`` px and blended with raised-cosine weights. ``batch`` planes per call (default 8 on
    a CPU, 32 on a GPU). ``stop()`` is called before each batch (it raises to stop: the engine's
    :meth:`~napari_emsr.engine.Engine.check_stop`).
    """
    import torch

    planes = np.asarray(planes, np.float32)
    n, h, w = planes.shape
    from .device import fast_precision

    cuda = str(device).startswith("cuda")
    fast = fast_precision(device)
    bs = int(batch or (32 if cuda else 8))
    # NOTE: a section-grid network needs a section at row 0 of what it sees: its planes are cut along x only
    th = h if getattr(net, "section_grid", False) else tile
    if h <= th and w <= tile:
        tiles = [(0, h, 0, w)]
    else:
        tiles = [(y0, min(y0 + th, h), x0, min(x0 + tile, w))
                 for y0 in _starts(h, th, overlap) for x0 in _starts(w, tile, overlap)]
    blend = len(tiles) > 1
    out = np.empty_like(planes) if not blend else np.zeros_like(planes)
    wsum = np.zeros((h, w), np.float32) if blend else None
    was_training = net.training
    staging: dict = {}  # CUDA: page-locked input buffers, one per batch shape, reused batch after batch
    net.eval()
    try:
        with torch.inference_mode():
            for y0, y1, x0, x1 in tiles:
                ws = _blend_window(y1 - y0, x1 - x0, overlap, y0 == 0, y1 == h, x0 == 0, x1 == w) if blend else None
                for b0 in range(0, n, bs):
                    if stop is not None:
                        stop()
                    x = torch.from_numpy(np.ascontiguousarray(planes[b0 : b0 + bs, y0:y1, x0:x1]))[:, None]
                    x = _pinned(x, staging).to(device, non_blocking=True) if cuda else x
                    if fast:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast(device):
                        y = net(x)
                    y = y.float()[:, 0].cpu().numpy()
                    if blend:
                        out[b0 : b0 + bs, y0:y1, x0:x1] += y * ws
                    else:
                        out[b0 : b0 + bs] = y
                if blend:
                    wsum[y0:y1, x0:x1] += ws
    finally:
        if was_training:
            net.train()
    return out / wsum if blend else out


def _pinned(x, staging: dict):
    """``x`` copied into a page-locked host buffer of its shape (made once per shape and call), so that the copy to
    the GPU is a DMA transfer that does not wait for the host. Reusing the buffer for the next batch is safe: each
    batch's result is copied back synchronously before the next batch is staged."""
    import torch

    buf = staging.get(tuple(x.shape))
    if buf is None:
        buf = staging[tuple(x.shape)] = torch.empty(tuple(x.shape), dtype=x.dtype, pin_memory=True)
    return buf.copy_(x)


def _starts(n: int, t: int, ov: int) -> list[int]:
    if n <= t:
        return [0]
    step = t - ov
    s = list(range(0, n - t, step))
    s.append(n - t)
    return s


def _blend_window(h: int, w: int, ov: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    """Smooth (raised-cosine) weights falling to ~0 over ``ov`` pixels at inner tile edges."""

    def ramp(n, lo_edge, hi_edge):
        r = np.ones(n, np.float32)
        k = min(ov, n // 2)
        if k > 0:
            up = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
            if not lo_edge:
                r[:k] = up
            if not hi_edge:
                r[n - k :] = up[::-1]
        return r

    return np.outer(ramp(h, top, bottom), ramp(w, left, right)).astype(np.float32) + 1e-6


def cpu_copy(obj: Any) -> Any:
    """A detached CPU copy of a state: tensors copied, dicts and lists walked, anything else deep-copied
    (a stage's state may nest, e.g. its networks' and optimizer's states)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


# -------------------------------------------------------------------------------------------------- model


class EMSRModel:
    """A trained network with everything needed to apply it to a volume.

    Parameters
    ----------
    config : dict
        JSON-able: ``method``, ``net``, ``net_kwargs``, ``factor``, ``axis``, ``order`` (interpolation before the
        network: 1 linear, 3 cubic), ``profile``, ``norm`` (``{"low", "high"}`` intensity percentiles mapped to
        0 and 1), ``dtype`` of the training input, ``history`` (list of dicts), ``version``.
    state_dict : dict
        The restoring network's weights (CPU tensors).
    stages : dict, optional
        The weights of the method's earlier training stages, by stage name (e.g. a learned degradation).
    """

    def __init__(self, config: dict[str, Any], state_dict: dict[str, Any], stages: dict[str, dict] | None = None):
        self.config = dict(config)
        self.config.setdefault("version", __version__)
        self.config.setdefault("history", [])
        self.state_dict = state_dict
        self.stages = dict(stages or {})
        self._nets: dict[tuple[str, bool], Any] = {}
        self._lock = threading.RLock()

    # pickling (dask workers): send config + weights, not built networks
    def __getstate__(self):
        return {"config": self.config, "state_dict": self.state_dict, "stages": self.stages}

    def __setstate__(self, state):
        self.__init__(state["config"], state["state_dict"], state.get("stages"))

    @property
    def norm(self) -> Normalisation:
        """The intensity normalisation the network was trained with."""
        lo, hi = self.config["norm"]
        return Normalisation(float(lo), float(hi))

    def for_range(self, stack: Normalisation) -> tuple[EMSRModel, str | None]:
        """This model for a stack of intensity range ``stack`` (:func:`robust_range`): itself, or, where the
        stack's range lies far from the model's (:func:`far_range`), a copy that normalises by the stack's own
        range (the network sees the intensities it was trained on, and the result comes back in the stack's), with
        the sentence that says so."""
        if not far_range(self.norm, stack):
            return self, None
        note = range_note(stack, self.norm, "it is applied to the stack scaled by its own range (right for another "
                          "bit depth or scaling of the same kind of data; train on this stack if it is another kind)")
        return EMSRModel({**self.config, "norm": stack.as_list()}, self.state_dict, self.stages), note

    def for_stack(self, data: Any) -> tuple[EMSRModel, str | None]:
        """:meth:`for_range` of ``data``'s own range (16 planes read every few pixels, at most 512 a side, over
        their whole extent as the model's range was taken; a stack with NaN or infinite values gets the model as it
        is: applying it says where they are)."""
        try:
            stack = robust_range(data, max_extent=512)
        except InputError:
            return self, None
        return self.for_range(stack)

    @property
    def order(self) -> int:
        """Interpolation along the anisotropic axis in front of the network (1 linear, 3 cubic)."""
        return int(self.config.get("order", 3))

    def predict(self, planes: np.ndarray, device: str = "cpu", **kwargs: Any) -> np.ndarray:
        """Restore (N, H, W) interpolated axial planes in input intensities: normalise, :func:`predict`, invert."""
        norm = self.norm
        return norm.invert(predict(self.network(device), norm.apply(planes), device, **kwargs))

    @property
    def factor(self) -> float:
        return float(self.config["factor"])

    @property
    def axis(self) -> int:
        return int(self.config.get("axis", 0))

    @property
    def history(self) -> list[dict]:
        return self.config["history"]

    @property
    def step(self) -> int:
        """Training steps done so far."""
        return int(self.config.get("step", 0))

    def network(self, device: str = "cpu", compiled: bool = False):
        """The network on ``device`` in eval mode, built once per device and cached; channels-last on CUDA.

        ``compiled``: the network through ``torch.compile`` (shapes dynamic), cached beside the plain one. The first
        calls of each new plane shape pay the compilation (seconds to minutes); what follows may run faster on a
        GPU (``benchmarks/bench_throughput.py --compile`` measures it). Needs a C++ compiler on a CPU.
        """
        key = (str(device), bool(compiled))
        with self._lock:
            net = self._nets.get(key)
            if net is None and compiled:
                import torch

                net = self._nets[key] = torch.compile(self.network(device), dynamic=True)  # (a re-entrant lock)
            if net is None:
                from .nets import build_net

                try:
                    net = build_net(self.config["net"], **self.config.get("net_kwargs", {}))
                    _check_dtypes(net.state_dict(), self.state_dict)
                    net.load_state_dict(self.state_dict)
                except EMSRError:
                    raise
                except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
                    raise ModelError(
                        f"the model's weights do not fit its network {self.config.get('net')!r} "
                        f"({type(exc).__name__}): the file is damaged or was edited; train a new model"
                    ) from None
                net.eval().to(device)
                from .device import fast_precision

                if fast_precision(device):
                    import torch

                    net = net.to(memory_format=torch.channels_last)
                self._nets[key] = net
            return net

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the model file atomically: into a new temporary file of a unique name beside it (no file of the
        user's is ever that name), flushed to disk, then renamed onto ``path``, while holding ``path``'s output lock
        (another process writing the same model file is refused, naming it).

        Raises
        ------
        OutputBusyError
            Another process is writing ``path``.
        OutputError
            The folder cannot be written, the disk is full or a file-size limit is reached (nothing of an
            earlier file at ``path`` is lost).
        """
        import torch

        from .io.safety import output_lock, temporary_path

        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "config": json.dumps(self.config), "state_dict": self.state_dict}
        if self.stages:
            payload["stages"] = self.stages
        if extra:
            payload.update(extra)
        with output_lock(path, what="model file"):
            tmp = None
            try:
                tmp = temporary_path(path)
                with open(tmp, "wb") as fh:
                    torch.save(payload, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                with contextlib.suppress(OSError):  # a replaced model file keeps its permissions
                    os.chmod(tmp, path.stat().st_mode & 0o777)
                os.replace(tmp, path)
                tmp = None
            except (OSError, RuntimeError) as exc:
                err = _save_error(exc, path)
                if err is None:
                    raise
                raise err from None
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, with_extra: bool = False):
        """Read a model file without unpickling code (``weights_only=True``)."""
        import torch

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist; train one with `emsr train` or pick another file")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"{path} is not a napari-emsr model file (or it holds code, which is refused): {exc.__class__.__name__}"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ModelError(f"{path} is not a napari-emsr model file; train one with `emsr train`")
        try:
            config = json.loads(payload["config"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path} has no readable config; the file is damaged") from None
        except RecursionError:  # a config nested thousands of levels deep: no model of ours is
            raise ModelError(f"{path} has a config nested too deeply to read: the file is damaged or not from "
                             "napari-emsr; train a new model") from None
        if not isinstance(config, dict):
            raise ModelError(f"{path} has no readable config (it is a {type(config).__name__}); the file is damaged")
        _check_norm(path, config)
        _check_weights(path, "weights", payload.get("state_dict"))
        stages = payload.get("stages")
        if stages is not None:
            if not isinstance(stages, dict) or not all(isinstance(k, str) and isinstance(v, dict)
                                                       for k, v in stages.items()):
                raise ModelError(f"{path} holds stage weights that are not a table of states; the file is damaged")
        model = cls(config, payload["state_dict"], stages)
        if with_extra:
            return model, {k: v for k, v in payload.items() if k not in ("format", "config", "state_dict", "stages")}
        return model

    def fingerprint(self) -> str:
        """A digest of the weights (of every stage) and the config that decides the output (sha256, hex)."""
        import hashlib

        import torch

        h = hashlib.sha256()
        keep = {k: self.config.get(k) for k in ("method", "net", "net_kwargs", "factor", "axis", "order", "norm")}
        h.update(json.dumps(keep, sort_keys=True).encode())
        for name, sd in [("", self.state_dict), *sorted(self.stages.items())]:
            for k in sorted(sd):
                v = sd[k]
                h.update(f"{name}/{k}".encode())
                if isinstance(v, torch.Tensor):
                    # NOTE: as bytes, so that any kind of number hashes (numpy has no bfloat16)
                    h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def validate(self) -> None:
        """Raise ModelError when the model cannot give a sound result: no usable factor or normalisation, or
        weights that are not finite (a diverged or damaged model would write garbage with no error)."""
        import torch

        c = self.config
        try:
            factor = float(c["factor"])
            lo, hi = (float(v) for v in c["norm"])
            order = float(c["order"])
            axis = c.get("axis", 0)
            stages = c.get("stages", [])
            if order not in (1.0, 3.0) or isinstance(c["order"], bool):
                raise ValueError(f"order {c['order']!r}")
            if isinstance(axis, bool) or axis not in (0, 1, 2):
                raise ValueError(f"axis {axis!r}")
            if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
                raise ValueError("stages")
        except (KeyError, TypeError, ValueError):
            raise ModelError(
                "the model file lacks a usable factor, normalisation, order (1 or 3) or axis (0, 1 or 2) in its "
                "config: it is damaged or not from napari-emsr; train a new model"
            ) from None
        unfinished = [s.get("name") for s in stages if not s.get("done")]
        if unfinished and int(c.get("step", 0)) == 0:  # the restoring network never trained
            raise ModelError(
                f"training of this model stopped in its stage {unfinished[0]!r}, before the restoring network: "
                "resume it (emsr train --resume MODEL, or Resume in the panel) before applying it"
            )
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ModelError(f"the model's factor F = {factor} is not a valid anisotropy factor: train a new model")
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ModelError(
                f"the model's intensity normalisation ({lo}, {hi}) is empty or not finite (trained on a constant "
                "or broken volume?): train a new model on the stack"
            )
        problem = norm_problem(lo, hi, c.get("dtype"))
        if problem is not None:
            raise ModelError(f"the model's intensity normalisation {problem}: the file is damaged or was edited; "
                             "train a new model on the stack")
        bad = [k for k, v in self.state_dict.items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ModelError(
                f"the model's weights hold NaN or infinite values ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}): training diverged or the file is damaged; train again "
                "(a lower --lr helps)"
            )

    def copy(self) -> EMSRModel:
        return EMSRModel(copy.deepcopy(self.config), cpu_copy(self.state_dict), cpu_copy(self.stages))

    def check_compatible(self, factor: float | None, axis: int = 0, tolerance: float = 0.05) -> None:
        """Raise ModelError when the data's factor or axis differs from what the model was trained for."""
        if axis != self.axis:
            raise ModelError(
                f"this model was trained for anisotropic axis {self.axis}, the data is reconstructed along axis "
                f"{axis}; pass --axis {self.axis} or train a model for this axis"
            )
        if factor is not None and abs(factor - self.factor) > tolerance * self.factor:
            raise ModelError(
                f"this model was trained for factor F = {self.factor:g}, the data has F = {factor:g}; "
                "train a model for this factor (or, if the voxel size in the file is wrong, pass --factor "
                f"{self.factor:g})"
            )

    def __repr__(self) -> str:
        c = self.config
        return f"EMSRModel(method={c.get('method')!r}, net={c.get('net')!r}, F={self.factor:g}, steps={self.step})"


def _check_weights(path: Path, what: str, state: Any) -> None:
    """A state_dict must be a table of named tensors (anything else would fail later, deep inside torch)."""
    import torch

    if not isinstance(state, dict):
        raise ModelError(
            f"{path} holds no {what} table ({type(state).__name__} instead): the file is damaged or not from "
            "napari-emsr; train a new model"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{path}: its {what} are not all named tensors ({', '.join(repr(k) for k in bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}): the file is damaged or not from napari-emsr; train a new model"
        )


def _check_dtypes(expected: dict[str, Any], given: dict[str, Any]) -> None:
    """Weights whose kind of number differs from the network's (integers, booleans or complex numbers where it
    has real floats) would be cast silently into nonsense: refuse them."""
    bad = []
    for k, e in expected.items():
        g = given.get(k)
        if g is None or not hasattr(g, "is_floating_point"):
            continue  # a missing key is load_state_dict's to report
        if e.is_floating_point() != g.is_floating_point() or g.is_complex() != e.is_complex():
            bad.append(f"{k}: {str(g.dtype).replace('torch.', '')} instead of {str(e.dtype).replace('torch.', '')}")
    if bad:
        raise ModelError(
            f"the model's weights have the wrong type of number ({'; '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}): "
            "the file is damaged or was edited; train a new model"
        )


#: Float intensities (and a float normalisation) beyond this magnitude are no image's: they overflow float32.
FLOAT_LIMIT = 1e30


def norm_problem(low: Any, high: Any, dtype: Any = None) -> str | None:
    """What is wrong with a normalisation range ``(low, high)`` for data of ``dtype`` (None when it is sound).

    Sound: two finite numbers, ``low < high``, a span float32 can divide by, and both inside the dtype's range
    with a margin of one range's width (integer data) or of magnitude below :data:`FLOAT_LIMIT` (float data
    or an unknown dtype). A range like ``[0, 1e308]`` would map every intensity to 0 and back to garbage.
    """
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError, OverflowError):
        return f"({low!r}, {high!r}) are not numbers"
    if isinstance(low, bool) or isinstance(high, bool):
        return f"({low!r}, {high!r}) are not numbers"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"({lo:g}, {hi:g}) is not finite"
    if not hi > lo:
        return f"({lo:g}, {hi:g}) is empty (low must be below high)"
    try:
        dt = np.dtype(str(dtype)) if dtype is not None else None
    except (TypeError, ValueError, SyntaxError):  # numpy parses the string: any text can reach here from a file
        dt = None
    if dt is not None and dt.kind in "ui":
        info = np.iinfo(dt)
        margin = float(info.max) - float(info.min)
        if lo < float(info.min) - margin or hi > float(info.max) + margin:
            return f"({lo:g}, {hi:g}) lies far outside the range of {dt} data ({info.min} to {info.max})"
    elif max(abs(lo), abs(hi)) >= FLOAT_LIMIT:
        return f"({lo:g}, {hi:g}) is beyond any image's intensities (|x| >= {FLOAT_LIMIT:g})"
    if not math.isfinite(hi - lo) or (hi - lo) < 1e-30 or (hi - lo) < 1e-7 * max(abs(lo), abs(hi)):
        return f"({lo:g}, {hi:g}) is too narrow to tell intensities apart in float32"
    return None


def _check_norm(path: Path, config: dict) -> None:
    """A model file's normalisation must be a sound range for the data it was trained on (:func:`norm_problem`)."""
    norm = config.get("norm")
    if norm is None:
        return  # validate() says what is missing when the model is applied
    if not isinstance(norm, (list, tuple)) or len(norm) != 2:
        raise ModelError(f"{path}: its intensity normalisation {norm!r} is not a pair (low, high): the file is "
                         "damaged or was edited; train a new model")
    problem = norm_problem(norm[0], norm[1], config.get("dtype"))
    if problem is not None:
        raise ModelError(f"{path}: its intensity normalisation {problem}: the file is damaged or was edited (a "
                         "model trained by napari-emsr has the intensity percentiles of its stack); train a new model")



def _save_error(exc: BaseException, path: Path):
    """An :class:`OutputError` for a model save that failed for lack of room or permission (None otherwise).

    ``torch.save`` reports a failed write of its zip archive as a ``RuntimeError`` naming no errno; the disk is
    then asked whether it is full.
    """
    from .errors import OutputError
    from .io.safety import free_space, human_size, not_writable_message, write_error

    what_next = "the earlier model file, if any, is untouched; then run it again"
    if isinstance(exc, OSError):
        return write_error(exc, path, path.parent, needed=None, what_next=what_next)
    text = str(exc)
    if "write" not in text.lower() and "file" not in text.lower():
        return None
    free = free_space(path.parent)
    if free is not None and free < (1 << 20):
        return OutputError(f"cannot write {path}: the disk is full ({human_size(free)} free). Free some space on "
                           f"the disk holding {path.parent} (or choose another path); {what_next}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return OutputError(not_writable_message(path.parent))
    return OutputError(f"cannot write {path} ({text.splitlines()[0][:200]}): check the disk holding {path.parent}; "
                       f"{what_next}")


def load_model(path: str | os.PathLike) -> EMSRModel:
    """Shorthand for :meth:`EMSRModel.load`."""
    return EMSRModel.load(path)
