#!/usr/bin/env bash
# The next GPU lease in one device call (about 6 minutes of a 600 s limit), after `bash benchmarks/gpu_carry.sh` here:
#   device tool: command `bash benchmarks/gpu_lease.sh`, carry ["outputs/gpu_carry"]; results come back from $OUT.
# 1. Both models, warm pass first, side by side: ours (Moonshine's attention heads zero-padded to 56, as `lora train`
#    does on CUDA) and its A/Bs without the padding and with the first convolution as one GEMM, the reference pinned,
#    pageable and with transformers' own head padding, the bare-loop ceiling, `profile` (is the step launch-bound or
#    kernel-bound, and which ops), `profile_ours` (what our loop and workers add to it, host ops beside device ops)
#    and `ours_cudnn_benchmark` (plan.md item 2).
# 2. With the time left: the ceiling under the image's own transformers (only the audio wheels installed), which says
#    whether a slower lease came from the carried transformers or from the machine.
# Dry run on a CPU: PYTHON=.venv/bin/python SKIP_INSTALL=1 OUT=/tmp/lease EXTRA="--smoke --steps 3 --warmup 1 --workers 1" bash benchmarks/gpu_lease.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_lease}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
CARRY=outputs/gpu_carry
mkdir -p "$OUT"
if [ -z "${SKIP_INSTALL:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/wheels/*.whl || exit 3
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_image \
    "$CARRY"/wheels/soundfile-*.whl "$CARRY"/wheels/soxr-*.whl "$CARRY"/wheels/cffi-*.whl "$CARRY"/wheels/pycparser-*.whl || exit 3
fi
export PYTHONUNBUFFERED=1
bench() {  # site-packages dir, seconds, output name, gpu.py arguments...
  local site=$1 seconds=$2 name=$3
  shift 3
  PYTHONPATH="$site:src" timeout "$seconds" "$PYTHON" benchmarks/gpu.py --models-dir "$CARRY/models" \
    --speech-dir "$CARRY/speech/speech" --output "$OUT/$name.json" $EXTRA "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? at ${SECONDS}s"
}
bench /tmp/site 470 gpu_lease --sides ours,ours_unpadded_heads,ours_unfolded_stem,reference,reference_unpinned,reference_padded_heads,ceiling,profile,profile_ours,ours_cudnn_benchmark
left=$((560 - SECONDS))
if [ "$left" -gt 60 ]; then
  bench /tmp/site_image "$left" gpu_image_transformers --sides ceiling --no-warm-pass
fi
grep -h "^\[bench-gpu" "$OUT"/*.log | cut -c1-400
