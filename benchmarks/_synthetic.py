"""A large synthetic EM volume for the throughput and cluster benchmarks: the bundled anisotropic medulla sample
(F = 4) mirrored to any shape, lazily, one dask block at a time (nothing of the whole is ever in memory)."""

from __future__ import annotations

import numpy as np


def tiled_sample(shape: tuple[int, int, int], chunks: tuple[int, int, int]):
    """A uint8 dask array of ``shape`` and ``chunks``: the sample stack tiled by whole-sample mirroring."""
    import dask.array as da

    from napari_emsr.sample import load_sample

    tile = np.asarray(load_sample(4)[0].data)

    def mirrored(n: int, period: int) -> np.ndarray:
        i = np.arange(n) % (2 * period)
        return np.where(i < period, i, 2 * period - 1 - i)

    iz, iy, ix = (mirrored(n, p) for n, p in zip(shape, tile.shape))

    def block(block_info=None):
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return tile[np.ix_(iz[z0:z1], iy[y0:y1], ix[x0:x1])]

    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.uint8,
                         meta=np.empty((0, 0, 0), np.uint8))
