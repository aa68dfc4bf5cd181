"""Start a napari thread worker, or run the same function synchronously for tests.

Setting the environment variable ``NAPARI_EMSR_NOTHREADS=1`` runs every task in the calling thread, calling
the same callbacks in the same order (``started``, ``yielded`` ..., ``returned`` or ``errored``,
``finished``); the plugin tests use the real thread workers.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = ("started", "yielded", "returned", "errored", "finished", "aborted")


def threads_disabled() -> bool:
    """Whether ``NAPARI_EMSR_NOTHREADS`` asks for synchronous tasks."""
    return os.environ.get("NAPARI_EMSR_NOTHREADS", "").strip().lower() not in ("", "0", "false", "no")


def start_task(
    func: Callable[..., Any],
    *args: Any,
    connect: dict[str, Callable] | None = None,
    progress: dict | bool | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``func(*args, **kwargs)`` in a napari thread worker (or synchronously, see module doc).

    Parameters
    ----------
    func : callable
        A plain function or a generator function.
    *args, **kwargs
        Its arguments.
    connect : dict, optional
        Signal name -> slot (or list of slots), among ``started``, ``yielded``, ``returned``, ``errored``,
        ``finished`` (and ``aborted`` for generator functions). An ``errored`` slot should always be given:
        without one the error is re-raised in the main thread.
    progress : dict or bool, optional
        napari's ``_progress`` (``{"total": n, "desc": ...}``): a progress bar in the activity dock, with a
        cancel button that quits the worker.

    Returns
    -------
    napari worker or None
        The started worker; ``None`` in synchronous mode.
    """
    connect = dict(connect or {})
    if threads_disabled():
        _run_sync(func, args, kwargs, connect)
        return None
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _connect=connect, _progress=progress or None, **kwargs)


def _slots(connect: dict, name: str) -> list[Callable]:
    slot = connect.get(name)
    if slot is None:
        return []
    return list(slot) if isinstance(slot, (list, tuple)) else [slot]


def _emit(connect: dict, name: str, *value: Any) -> None:
    for slot in _slots(connect, name):
        slot(*value)


def _run_sync(func: Callable, args: tuple, kwargs: dict, connect: dict) -> None:
    _emit(connect, "started")
    try:
        if inspect.isgeneratorfunction(func):
            gen = func(*args, **kwargs)
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                _emit(connect, "yielded", item)
        else:
            result = func(*args, **kwargs)
    except Exception as err:  # handed to the errored slot, as the thread worker does
        logger.debug("task %s failed", getattr(func, "__name__", func), exc_info=True)
        if not _slots(connect, "errored"):
            raise
        _emit(connect, "errored", err)
    else:
        _emit(connect, "returned", result)
    finally:
        _emit(connect, "finished")
