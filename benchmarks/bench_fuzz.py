"""Fuzzing at length: the strategies of tests/test_fuzz.py (hypothesis) run for many more examples, counted.

    python benchmarks/bench_fuzz.py                       # 600 TIFF, 300 metadata, 100 chunk, 200 model cases
    python benchmarks/bench_fuzz.py --tiff 50 --zarr-meta 20 --chunks 10 --models 10 --seed 3

For each family (damaged TIFF bytes, OME-Zarr metadata edits, damaged zarr chunks, damaged model files applied
through ``emsr apply``) it prints the examples tried, how many ended in a result, in our error (an
``EMSRError``; exit code 2 from the command line), in another exception (a crash: a bug) or in a hang (no
answer within the alarm), and the distinct crashes with an example each. The last line is JSON. The run
is seeded (``--seed``) and keeps no example database. Exit code 1 when any crash or hang was found.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiff", type=int, default=600, help="damaged TIFF files")
    ap.add_argument("--zarr-meta", type=int, default=300, help="OME-Zarr metadata edits (.zattrs or .zarray)")
    ap.add_argument("--chunks", type=int, default=100, help="damaged zarr chunks")
    ap.add_argument("--models", type=int, default=200, help="damaged model files applied with emsr apply")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=60, help="seconds before a case counts as a hang")
    ap.add_argument("--keep", default=None, help="copy the inputs that crash or hang into this folder")
    a = ap.parse_args()
    # the readers' warnings about damaged files are expected by the thousand: not printed (they still reach
    # the handlers that turn them into our errors)
    logging.getLogger().addHandler(logging.NullHandler())

    import hypothesis
    import test_fuzz as tf
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tf.HANG_S = a.hang_s
    tf.KEEP = Path(a.keep).resolve() if a.keep else None
    families = {}

    def family(name: str, n: int, case):
        """Run ``case(data, i)`` (returning tf.classify's answer) for ``n`` drawn examples; count."""
        counts: Counter = Counter()
        bugs: dict[str, str] = {}
        i = [0]

        @hypothesis.seed(a.seed)
        @settings(max_examples=max(n, 1), database=None, deadline=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        @given(data=st.data())
        def run(data):
            i[0] += 1
            got = case(data, i[0])
            kind = got.split(":")[0]
            counts[kind] += 1
            if kind in ("bug", "hang"):
                bugs.setdefault(got.split("\n")[0][:160], f"example {i[0]}: {got[:400]}")

        t = time.perf_counter()
        if n:
            run()
        dt = time.perf_counter() - t
        families[name] = {"tried": sum(counts.values()), "results": counts["ok"], "our_errors": counts["error"],
                          "crashes": counts["bug"], "hangs": counts["hang"], "seconds": round(dt, 1),
                          "distinct_crashes": bugs}
        f = families[name]
        print(f"{name:<14} tried {f['tried']:5d}: results {f['results']:5d}, our errors {f['our_errors']:5d}, "
              f"crashes {f['crashes']:3d}, hangs {f['hangs']:2d}  ({dt:.0f} s)", flush=True)
        for msg, ex in bugs.items():
            print(f"    {msg}\n        {ex}", flush=True)

    with tempfile.TemporaryDirectory(prefix="emsr-bench-fuzz-") as d:
        work = Path(d)
        print(f"bench_fuzz: seed {a.seed}, {os.cpu_count()} cores, {date.today()}", flush=True)
        tiffs = tf.tiff_bases(work)
        family("tiff", a.tiff, lambda data, i: tf.tiff_case(work, data.draw(tf.damaged_tiff(tiffs)), i))
        zbase = tf.zarr_base(work)
        attrs = json.loads((zbase / ".zattrs").read_text())
        zarray = json.loads((zbase / "0" / ".zarray").read_text())

        def meta(data, i):
            which = data.draw(st.sampled_from([".zattrs", ".zattrs", "0/.zarray"]))
            doc = data.draw(tf.json_damage(attrs if which == ".zattrs" else zarray))
            return tf.zarr_meta_case(zbase, work, which, doc, i)

        family("zarr metadata", a.zarr_meta, meta)
        files = tf.chunk_files(zbase)

        def chunk(data, i):
            c = data.draw(st.sampled_from(files))
            return tf.zarr_chunk_case(zbase, work, c, data.draw(tf.chunk_damage((zbase / c).read_bytes())), i)

        family("zarr chunks", a.chunks, chunk)
        if a.models:
            tif, payload = tf.model_base(work)
            family("model files", a.models,
                   lambda data, i: tf.model_case(tif, data.draw(tf.model_damage(payload)), work, i))
    total = {k: sum(f[k] for f in families.values()) for k in ("tried", "results", "our_errors", "crashes", "hangs")}
    print(f"{'all':<14} tried {total['tried']:5d}: results {total['results']:5d}, our errors "
          f"{total['our_errors']:5d}, crashes {total['crashes']:3d}, hangs {total['hangs']:2d}", flush=True)
    print(json.dumps({"date": str(date.today()), "seed": a.seed, "families": families, "total": total}))
    return 1 if total["crashes"] or total["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
