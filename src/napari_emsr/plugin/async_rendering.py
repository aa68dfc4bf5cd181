"""napari's asynchronous rendering, as the panel offers it: shown, offered, never changed behind the user's back.

With it on, napari computes a new plane in a thread, so the viewer stays usable while a slow plane (the fused
layer on a CPU) is on its way. It is napari's own preference, saved by napari for every session and every
layer, so the plugin changes it only when the user says so: the Reconstruct box asks first
(:func:`ask_to_set`), the fused-layer notice offers a button (:func:`fused_cost_notice`). How much it matters
is measured by ``benchmarks/bench_plane_latency.py --fused-viewer``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

#: Where napari keeps the preference.
PREFERENCE = "Preferences > Experimental > Render Layers Asynchronously"


def _experimental() -> Any:
    from napari.settings import get_settings

    return get_settings().experimental


def is_on() -> bool:
    """Whether napari computes planes in the background (its asynchronous-rendering preference)."""
    return bool(_experimental().async_)


def set_on(on: bool) -> None:
    """Change napari's preference (napari saves it for every session): only on the user's word."""
    _experimental().async_ = bool(on)


def events() -> Any:
    """The event napari emits when the preference changes (``event.value`` is the new value)."""
    return _experimental().events.async_


def ask_to_set(parent: Any, on: bool) -> bool:
    """Ask the user whether to turn napari's preference ``on`` (or off) and do it if they agree.

    Parameters
    ----------
    parent : QWidget
        The dialog's parent.
    on : bool
        The value asked for.

    Returns
    -------
    bool
        Whether the preference changed.
    """
    from qtpy.QtWidgets import QMessageBox

    if bool(on) == is_on():
        return False
    answer = QMessageBox.question(
        parent,
        "napari preference",
        f"Turn napari's asynchronous rendering {'on' if on else 'off'}?\n\nThis is napari's own preference "
        f"({PREFERENCE}); napari saves it and uses it in every session, for every layer. On, planes are "
        "computed in a thread, so napari stays usable while a slow plane is on its way.",
    )
    if answer != QMessageBox.StandardButton.Yes:
        return False
    set_on(on)
    return True


def fused_cost_notice(turn_on: Callable[[], Any]) -> Any:
    """The notice shown when a fused layer is added on a CPU: slow blocks, and whether napari waits for them.

    Parameters
    ----------
    turn_on : callable
        Bound method run when the user presses the notice's button (held weakly: napari keeps notices for the
        whole session, and a closed panel must not be kept alive by one).

    Returns
    -------
    napari.utils.notifications.Notification
        With a button that turns the preference on when it is off.
    """
    from napari.utils.notifications import Notification, NotificationSeverity

    head = (
        "napari-emsr: a fused plane needs the yz planes that cross it, so the fused layer computes 64 rows at a "
        "time: on a CPU the first view of each block is slow (benchmarks/bench_plane_latency.py --fused-viewer "
        "measures it); "
    )
    if is_on():
        return Notification(
            head + "napari stays usable meanwhile (planes are computed in the background).",
            severity=NotificationSeverity.INFO,
        )
    return Notification(
        head + "napari waits meanwhile. napari's asynchronous rendering keeps it usable (a napari preference, "
        f"{PREFERENCE}, saved for every session); or browse with xz-restored and export the fused volume.",
        severity=NotificationSeverity.INFO,
        actions=[("Turn on napari's asynchronous rendering", _weak_action(turn_on))],
    )


def _weak_action(method: Callable[[], Any]) -> Callable[[Any], None]:
    """A notification action calling the bound ``method`` while its object lives."""
    ref = weakref.WeakMethod(method)

    def action(_notification: Any) -> None:
        bound = ref()
        if bound is not None:
            bound()

    return action
