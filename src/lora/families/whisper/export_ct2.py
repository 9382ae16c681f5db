"""Whisper (LoRA merged) -> a CTranslate2 directory, as the packaged original is shipped.

Why CTranslate2: the original Whisper tiny.en comes as a faster-whisper CTranslate2 conversion, so
the exported model runs in the same runtime as the original and the two can be timed side by side.
`TransformersConverter` reads a local transformers directory, so the merged model and its
processor are saved to a temporary folder first. Weights are stored as float16 by default, as the
original package stores them (CPUs still compute in float32; see `Ct2Whisper`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lora.core.extras import require_extra

COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")  # what Ct2Whisper / faster-whisper read
DEFAULT_QUANTIZATION = None  # keep float32 (see above)


def export_whisper_ct2(model, processor, out_dir: Path, quantization: str | None = DEFAULT_QUANTIZATION) -> list[Path]:
    """Write `model.bin`, `config.json`, vocabulary and tokenizer files into `out_dir`."""
    ctranslate2 = require_extra("ctranslate2", "export", "exporting Whisper to CTranslate2")

    with tempfile.TemporaryDirectory(prefix="lora_merged_") as merged:
        model.save_pretrained(merged, safe_serialization=True)
        processor.save_pretrained(merged)
        processor.feature_extractor.save_pretrained(merged)  # transformers 5 folds it into processor_config.json
        converter = ctranslate2.converters.TransformersConverter(merged, copy_files=list(COPIED_FILES))
        converter.convert(str(out_dir), quantization=quantization, force=True)
    return sorted(Path(out_dir).iterdir())
