# The whole set-up on a fresh machine with only Python and make: `make test`, `make demo`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run
SPEECH ?= ../shared/speech
QUICK := outputs/real_small_quick

.PHONY: setup lint test test-fast demo poc demo-digits bench bench-gpu report-screenshot clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

setup: $(UV)
	@# bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set (this CI image sets it) every process
	@# would otherwise compile transformers from source on each import (a fresh clone loaded the model in 6-8 s, not 3)
	$(UV) sync --frozen --quiet --compile-bytecode || $(UV) sync --quiet --compile-bytecode
	@# ffmpeg: lora.core.audio decodes what libsndfile does not read (M4A, WebM) through it, and transformers'
	@# pipeline("automatic-speech-recognition") reads audio files through it
	@command -v ffmpeg >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
		|| echo "note: ffmpeg not installed; M4A/WebM audio is refused and transformers' pipeline cannot read audio files (apt-get install ffmpeg)"; }
	@# jemalloc: the training commands' allocator where installed (lower peak RSS; lora.core.memory)
	@ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null) \
		|| echo "note: jemalloc not installed; training uses glibc malloc, with a higher peak RSS (apt-get install libjemalloc2)"; }

lint: setup
	$(RUN) ruff check src tests benchmarks recipes scripts main.py train_real_small.py
	$(RUN) lint-imports

test: setup lint
	$(RUN) pytest -q

test-fast: setup
	$(RUN) pytest -q -m "not slow"

models/moonshine-base-en/lora_import.json: | setup
	$(RUN) lora-import moonshine-base-en --output models/moonshine-base-en

poc: setup
	$(RUN) python main.py

QUICK_RUN := $(RUN) python train_real_small.py --train-split train.100 --dataset-samples 20 --max-steps 20 \
		--gradient-accumulation-steps 4 --wer-batches 1 --output-dir $(QUICK)

# The quick run's adapter, for `make bench`'s export section when `make demo` has not made one yet.
$(QUICK)/lora_adapter/adapter_config.json: | setup models/moonshine-base-en/lora_import.json
	$(QUICK_RUN)

demo: setup models/moonshine-base-en/lora_import.json
	$(RUN) python main.py
	$(QUICK_RUN)
	$(RUN) python scripts/build_manifest.py --split test --samples 3 --output data/heldout_manifest.jsonl
	$(RUN) python scripts/run_stt.py --adapter-dir $(QUICK)/lora_adapter --processor-dir $(QUICK)/processor \
		--audio-list data/heldout_manifest.jsonl --output $(QUICK)/artifact_test.json

demo-digits: setup
	$(RUN) lora-digits --speech-dir $(SPEECH)

bench: setup $(QUICK)/lora_adapter/adapter_config.json
	$(RUN) python benchmarks/run.py

# GPU throughput bench on any CUDA machine with this tree: random-initialised models from the imported
# configs (the real weights are not needed for speed), real FLAC clips of the speech folder.
bench-gpu: setup models/moonshine-base-en/lora_import.json
	$(RUN) lora import whisper-tiny.en --output models/whisper-tiny.en
	$(RUN) python benchmarks/gpu.py --models-dir models --speech-dir $(SPEECH)

report-screenshot: setup
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(RUN) python -m lora.scripts.screenshot $(QUICK)/report.html $(QUICK)/report.png

clean:
	rm -rf outputs data models .pytest_cache
