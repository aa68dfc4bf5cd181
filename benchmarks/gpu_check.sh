#!/usr/bin/env bash
# What only a GPU shows, in one run (for a session lent a device; see docs/benchmarks.md, "GPU").
#   bash benchmarks/gpu_check.sh            # writes its figures under ${OUT:-gpu_out}/
# 1. the tests marked gpu (bf16 autocast, channels-last, out-of-memory retries on CUDA);
# 2. end-to-end throughput (file in, OME-Zarr out) of the old and the new default network at F = 8 and 4, with the
#    time split and the share of the GPU's peak; the new one again through torch.compile;
# 3. training speed of both networks on the GPU (bench_speed).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -m pytest -q -p no:cacheprovider -m gpu tests > "$OUT/gpu_tests.txt" 2>&1
for f in 8 4; do
  for net in rescnn rescnn-sections; do
    timeout 240 $PY benchmarks/bench_throughput.py --shape 128,1024,1024 --factor $f --net $net --device cuda \
      > "$OUT/throughput_${net}_f${f}.txt" 2>&1
  done
done
timeout 240 $PY benchmarks/bench_throughput.py --shape 128,1024,1024 --factor 8 --net rescnn-sections --device cuda \
  --compile > "$OUT/throughput_rescnn-sections_f8_compiled.txt" 2>&1
timeout 120 $PY benchmarks/bench_speed.py --device cuda --nets rescnn,rescnn-sections,uformer,uformer-sections --batch 64 > "$OUT/train_speed.txt" 2>&1
tail -n 3 "$OUT"/*.txt
