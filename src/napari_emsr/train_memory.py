"""What a training step costs in memory, measured before the first step
(:meth:`napari_emsr.train.Trainer.check_memory`): the bytes of a model's state, of one patch through the network,
and the memory available."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _state_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.numel()) * int(obj.element_size())
    if isinstance(obj, Mapping):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def _bytes_per_patch(torch, net, patch: int) -> int | None:
    """Bytes one training patch of ``patch`` x ``patch`` takes in a training step: every layer's output is kept
    for the backward pass and gets a gradient of its size (x 2), and autograd needs about as much again (x 3
    in all). Measured with one forward pass of one patch in eval mode (no state of the network or of the
    random generators changes); None when the network does not take such an input."""
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(int(output.numel()) * output.element_size())

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = net.training
    rng = torch.random.get_rng_state()
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, 1, patch, patch), device=next(net.parameters()).device))
    except Exception:  # NOTE: an estimate only: a network that wants other inputs is not estimated
        return None
    finally:
        for h in handles:
            h.remove()
        torch.random.set_rng_state(rng)
        if was_training:
            net.train()
    return 3 * (sum(sizes) + 2 * patch * patch * 4)


def _available_memory() -> int | None:
    """Bytes of memory this process can still use: the machine's available memory, or the container's
    (cgroup) limit less its use where that is smaller; None when neither can be asked."""
    free = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:  # elsewhere: free physical pages (less than what could be made available, so on the safe side)
            free = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    try:  # a limit on this process's address space (ulimit -v)
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as fh:
                used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            left = max(0, soft - used)
            free = left if free is None else min(free, left)
    except (ImportError, OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            left = max(0, int(limit) - int(used))
            free = left if free is None else min(free, left)
    except OSError:
        pass
    return free
