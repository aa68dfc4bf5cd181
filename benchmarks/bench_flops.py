"""FLOPs per output pixel of every registered network and size at F = 4, 8 and 12, counted by torch
(``torch.utils.flop_counter``; a multiply-add is 2) on one plane of 32 sections x 256 px
(:func:`napari_emsr.nets.flops.flops_per_pixel`). A fused reconstruction (xz and yz) costs twice this per voxel.

    python benchmarks/bench_flops.py
"""

from __future__ import annotations

import collections
import json
from datetime import date


def main() -> None:
    from napari_emsr.nets.flops import flops_table

    rows = flops_table((4, 8, 12))
    table = collections.defaultdict(dict)
    for r in rows:
        table[(r["net"], r["size"], r["grid"])][r["factor"]] = r["flops_per_pixel"]
    print(f"FLOPs per output pixel of one plane (torch's counter), {date.today()}")
    print("| network | size | grid | F = 4 | F = 8 | F = 12 |")
    print("|---|---|---|---|---|---|")
    for (net, size, grid), by_f in table.items():
        cells = [f"{by_f[f] / 1e3:,.0f} k" if by_f[f] >= 1e4 else f"{by_f[f] / 1e3:.1f} k" for f in (4, 8, 12)]
        print(f"| `{net}` | {size} | {grid} | " + " | ".join(cells) + " |")
    print(json.dumps({"date": str(date.today()), "rows": rows}))


if __name__ == "__main__":
    main()
