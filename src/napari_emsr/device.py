"""Devices: which exist, and what "auto" means. torch is imported inside the functions."""

from __future__ import annotations

import functools

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
    """Release cached GPU memory after training or a cancel (no-op on the CPU: the garbage collection a GPU's
    cache needs first takes 0.3-0.4 s with torch loaded, a freeze when the panel calls it on the GUI thread)."""
    import gc

    import torch

    if device is not None and str(device).startswith("cpu"):
        return
    mps = getattr(torch.backends, "mps", None)
    on_mps = mps is not None and mps.is_available() and (device is None or str(device).startswith("mps"))
    if not torch.cuda.is_available() and not on_mps:
        return
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if on_mps:
        torch.mps.empty_cache()


#: ``NAPARI_EMSR_CPU_BF16``: ``auto`` (the default: on where the CPU multiplies bf16 natively), ``0`` (never: full
#: fp32 everywhere, e.g. to compare with results made elsewhere) or ``1`` (always, even where it is emulated).
CPU_BF16_ENV = "NAPARI_EMSR_CPU_BF16"


def cpu_bf16() -> bool:
    """Whether the networks run in bf16 (autocast, weights in channels-last layout) on the CPU.

    On by default where the CPU has bf16 matrix instructions (Intel AMX or AVX-512 BF16: Sapphire Rapids and later
    Xeons, AMD Zen 4 and later), which oneDNN uses: the restoring networks train about twice as fast, the network
    alone restores three to four times as fast and `emsr apply` 1.5-2.3 times, within bf16's rounding
    (``benchmarks/bench_apply_speed.py --precision``).
    Elsewhere bf16 is emulated and slower, so it stays off. :data:`CPU_BF16_ENV` overrides it.
    """
    import os

    choice = os.environ.get(CPU_BF16_ENV, "auto").strip().lower()
    if choice in ("0", "off", "false", "no", "fp32"):
        return False
    if choice in ("1", "on", "true", "yes", "bf16"):
        return True
    return _native_bf16()


@functools.lru_cache(maxsize=1)
def _native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions that torch's oneDNN backend uses (read once)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = set(f.read().split())
    except OSError:  # not Linux: no way to tell here; fp32
        flags = set()
    import torch

    return bool(flags & {"amx_bf16", "avx512_bf16"}) and torch.backends.mkldnn.is_available()


def fast_precision(device: str) -> bool:
    """Whether the networks run with bf16 autocast and channels-last weights on ``device`` (CUDA always; the
    CPU where :func:`cpu_bf16` says so)."""
    device = str(device)
    return device.startswith("cuda") or (device == "cpu" and cpu_bf16())
