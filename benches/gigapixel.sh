#!/usr/bin/env bash
# A ≥ 1 gigapixel render (32768×32768) on a GPU machine, with host-resident state: time, peak
# host memory (from /usr/bin/time) and peak device memory (nvidia-smi, sampled) are printed.
# Run from the project root after `pip install --no-deps -e .`:  bash benches/gigapixel.sh
set -euo pipefail
SIZE=${SIZE:-32768}
IMAGES=${IMAGES:-../shared/images}
OUT=${OUT:-/tmp/gigapixel.tif}
(while sleep 5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done) \
  > /tmp/gigapixel-gpu-mem.log 2>/dev/null &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
/usr/bin/time -v hiresnst render "$IMAGES/tubingen.jpg" "$IMAGES/starry_night.jpg" -o "$OUT" \
  --size "$SIZE" --scales 4 --steps 40,20,10,2 --weights random --state host --tile 4096 \
  --precision bf16 --bit-depth 8 --json 2> /tmp/gigapixel-time.log | tee /tmp/gigapixel.json \
  || { tail -n 25 /tmp/gigapixel-time.log; exit 1; }
grep -E "Elapsed|Maximum resident" /tmp/gigapixel-time.log
echo "peak GPU memory (MiB): $(sort -n /tmp/gigapixel-gpu-mem.log | tail -1)"
