"""The CTranslate2 export format's callables: write the directory, run it (or the packaged original)."""

from __future__ import annotations

from pathlib import Path

from lora.families.whisper.export_ct2 import export_whisper_ct2
from lora.families.whisper.reference import Ct2Whisper


def export_ct2(model, processor, out_dir: Path) -> list[Path]:
    return export_whisper_ct2(model, processor, out_dir)


def open_ct2(out_dir: Path | None = None):
    runtime = Ct2Whisper(out_dir)
    return lambda audio, limit: runtime.transcribe(audio, limit).text
