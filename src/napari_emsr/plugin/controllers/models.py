"""The current model: set it, save it, load one (file work in workers)."""

from __future__ import annotations

from typing import Any

from napari_emsr.errors import InputError
from napari_emsr.plugin.host import Host
from napari_emsr.plugin.workers.tasks import load_model_task, save_model_task


def describe(model: Any) -> str:
    """One line about a model: method, network, factor and step."""
    from napari_emsr.methods import METHODS

    cfg = model.config
    app = getattr(METHODS.get(str(cfg.get("method"))), "application", None)
    if app is not None and app.lateral:
        return (f"{cfg.get('method')} / {cfg.get('net')} ({cfg.get('size')}), s = {model.factor:.3g} (xy planes), "
                f"step {model.step}")
    return (f"{cfg.get('method')} / {cfg.get('net')} ({cfg.get('size')}), F = {model.factor:.3g}, axis {model.axis}, "
            f"step {model.step}")


class ModelController:
    """Keeps the runtime's model and the Model box in step.

    Parameters
    ----------
    host : Host
        The panel.
    models : ModelWidget
        The Model box.
    """

    def __init__(self, host: Host, models: Any):
        self.host = host
        self.models = models

    def set_model(self, model: Any) -> None:
        """Make ``model`` the current one (None: no model)."""
        if model is not None:
            self.models.set_info(describe(model))
        self.host.runtime.model = model

    def save(self, path: str) -> Any:
        """Save the current model to ``path`` in a worker."""
        host = self.host
        if host.runtime.model is None:
            host.report_error(InputError("no model to save yet: train or load one first"), "saving the model")
            return None
        return host.start(
            save_model_task, host.runtime.model, str(path),
            connect={"returned": lambda p: host.set_status(f"Model saved to {p}"),
                     "errored": lambda err: host.report_error(err, what="saving the model")},
        )

    def load(self, path: str) -> Any:
        """Load a model file in a worker; it becomes the current model."""
        from napari_emsr.methods import method_names

        host = self.host

        def loaded(model: Any) -> None:
            self.set_model(model)
            method = model.config.get("method")
            if method in method_names():
                host.params.method = method
            host.set_status(f"Model loaded from {path}")

        return host.start(
            load_model_task, str(path),
            connect={"returned": loaded, "errored": lambda err: host.report_error(err, what="loading the model")},
        )
