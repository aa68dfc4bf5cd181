"""Devices: which exist, and what "auto" means. torch is imported inside the functions."""

from __future__ import annotations

from .errors import InputError


def list_devices() -> list[tuple[str, str]]:
    """The devices torch can use here, as (id, label) pairs, best first; "cpu" is always last.

    Labels name the GPU and its memory, e.g. ``("cuda:0", "cuda:0 - NVIDIA H100 (79 GiB)")``.
    """
    import torch

    out: list[tuple[str, str]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append((f"cuda:{i}", f"cuda:{i} - {p.name} ({p.total_memory / 2**30:.0f} GiB)"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(("mps", "mps - Apple GPU"))
    out.append(("cpu", f"cpu - {torch.get_num_threads()} threads"))
    return out


def resolve_device(device: str | None = "auto") -> str:
    """Turn "auto" (or None) into the best device that exists; check an explicit one exists."""

    if device in (None, "", "auto"):
        return list_devices()[0][0]
    device = str(device)
    known = [d for d, _ in list_devices()]
    if device == "cuda":
        device = "cuda:0"
    if device not in known:
        raise InputError(f"device {device!r} is not available here; available: {', '.join(known)} (or 'auto')")
    return device


def free_memory(device: str | None = None) -> None:
    """Release cached GPU memory after training or a cancel (no-op on the CPU)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
