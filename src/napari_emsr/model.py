"""The saved model: one file holding weights and a JSON-able config (DESIGN.md, contract).

A model file is a ``torch.save`` of ``{"format": "napari-emsr-model", "config": <JSON string>, "state_dict": ...}``
(and, in checkpoints, ``"optimizer"``). It is read with ``torch.load(weights_only=True)``: a model file from a
stranger cannot run code when it is opened.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ModelError

FORMAT = "napari-emsr-model"


class EMSRModel:
    """A trained network with everything needed to apply it to a volume.

    Parameters
    ----------
    config : dict
        JSON-able: ``method``, ``net``, ``net_kwargs``, ``factor``, ``axis``, ``order`` (interpolation before the
        network: 1 linear, 3 cubic), ``profile``, ``norm`` (``{"low", "high"}`` intensity percentiles mapped to
        0 and 1), ``dtype`` of the training input, ``history`` (list of dicts), ``version``.
    state_dict : dict
        The network's weights (CPU tensors).
    """

    def __init__(self, config: dict[str, Any], state_dict: dict[str, Any]):
        self.config = dict(config)
        self.config.setdefault("version", __version__)
        self.config.setdefault("history", [])
        self.state_dict = state_dict
        self._nets: dict[str, Any] = {}
        self._lock = threading.Lock()

    # pickling (dask workers): send config + weights, not built networks
    def __getstate__(self):
        return {"config": self.config, "state_dict": self.state_dict}

    def __setstate__(self, state):
        self.__init__(state["config"], state["state_dict"])

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

    def network(self, device: str = "cpu"):
        """The network on ``device`` in eval mode, built once per device and cached."""
        with self._lock:
            net = self._nets.get(device)
            if net is None:
                from .nets import build_net

                net = build_net(self.config["net"], **self.config.get("net_kwargs", {}))
                net.load_state_dict(self.state_dict)
                net.eval().to(device)
                self._nets[device] = net
            return net

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the model file atomically (temporary name, then rename)."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "config": json.dumps(self.config), "state_dict": self.state_dict}
        if extra:
            payload.update(extra)
        tmp = path.with_name(path.name + ".partial")
        torch.save(payload, tmp)
        os.replace(tmp, path)
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
        except Exception as exc:  # noqa: BLE001 - any failure means "not a safe model file"
            raise ModelError(
                f"{path} is not a napari-emsr model file (or it holds code, which is refused): {exc.__class__.__name__}"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ModelError(f"{path} is not a napari-emsr model file; train one with `emsr train`")
        try:
            config = json.loads(payload["config"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path} has no readable config; the file is damaged") from None
        model = cls(config, payload["state_dict"])
        if with_extra:
            return model, {k: v for k, v in payload.items() if k not in ("format", "config", "state_dict")}
        return model

    def copy(self) -> EMSRModel:
        return EMSRModel(copy.deepcopy(self.config), {k: v.clone() for k, v in self.state_dict.items()})

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


def load_model(path: str | os.PathLike) -> EMSRModel:
    """Shorthand for :meth:`EMSRModel.load`."""
    return EMSRModel.load(path)
