"""The ONNX export format's callables: write the graphs, run them, run the packaged original."""

from __future__ import annotations

from pathlib import Path

from lora.families.moonshine.export_onnx import export_moonshine_onnx
from lora.families.moonshine.onnx_runtime import OnnxMoonshine
from lora.families.moonshine.reference import OrtMoonshine


def export_onnx(model, processor, out_dir: Path) -> list[Path]:
    files = export_moonshine_onnx(model, out_dir)
    model.config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)  # tokenizer.json: the exported runtime decodes with it
    return files


def open_onnx(out_dir: Path):
    runtime = OnnxMoonshine(out_dir)
    return lambda audio, limit: runtime.transcribe(audio, limit)[1]


def open_original():
    runtime = OrtMoonshine()
    return lambda audio, limit: runtime.transcribe(audio, limit)[1]
