#!/usr/bin/env bash
# What `benchmarks/gpu.py` needs on a lent GPU machine (no network there; only the repo and up to 64 MiB of
# carried git-ignored paths travel), gathered into outputs/gpu_carry (git-ignored, 29 MB):
#   wheels/  the Python packages the machine's image lacks, and this project's locked transformers, peft and regex
#            (the image's transformers 5.17 breaks Whisper's compiled graph at its layer-drop draw; 5.24 does not)
#   models/  each imported model's config, tokenizer and feature-extractor files, no weights (random-initialised there)
#   speech/  the real FLAC clips of ../shared/speech
# Then, on the GPU machine (device tool: carry ["outputs/gpu_carry"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site outputs/gpu_carry/wheels/*.whl &&
#   PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:src python3 benchmarks/gpu.py --models-dir outputs/gpu_carry/models \
#     --speech-dir outputs/gpu_carry/speech/speech --output "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
# adding `--sides ...` (all default sides do not fit one 600 s call); `benchmarks/gpu_lease.sh` is the next lease's call.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=outputs/gpu_carry
MODELS=${LORA_HOME:-$HOME/.cache/lora}/models
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/models" "$CARRY/speech"
# soundfile + soxr decode and resample in the loader's workers; cffi + pycparser are soundfile's own needs;
# transformers, peft and regex at the versions this project's environment has (uv.lock)
locked=$(uv run --no-sync python -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('transformers', 'peft', 'regex')))")
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$CARRY/wheels" \
  soundfile==0.14.0 soxr==1.1.0 cffi==2.0.0 pycparser==2.23 $locked
for name in moonshine-base-en whisper-tiny.en; do
  test -f "$MODELS/$name/config.json" || uv run --no-sync lora import "$name" --output "$MODELS/$name" >/dev/null
  mkdir -p "$CARRY/models/$name"
  find "$MODELS/$name" -maxdepth 1 -name '*.json' ! -name lora_import.json -exec cp {} "$CARRY/models/$name/" \;
done
cp -r ../shared/speech "$CARRY/speech/"
du -sh "$CARRY"
