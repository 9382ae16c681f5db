"""`lora-export`: merge a LoRA adapter into its base model, export it for an on-device runtime, and
check the export (WER against the PyTorch model, speed against the original in the same runtime).

    onnx  Moonshine -> encoder.onnx + KV-cached decoder.onnx for onnxruntime (`moonshine_onnx`)
    ct2   Whisper   -> a CTranslate2 directory (`whisper_ct2`)

The exported files are written to a temporary sibling folder and renamed into place, then
`export_report.json` is written atomically beside them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError
from lora.core.outputs import (
    library_versions,
    output_dir,
    quiet_progress_bars,
    replace_dir,
    writing,
)
from lora.core.paths import default_speech_dir
from lora.data.records import list_subsets, read_librispeech_dir
from lora.data.sources import read_manifest_rows
from lora.export.formats import export_format
from lora.export.merge import load_merged, recorded_family
from lora.export.parity import measure_parity
from lora.families import resolve_callable
from lora.results import ExportReport, to_dict, write_result

REPORT_FILE = "export_report.json"
LIBRISPEECH_PREFIXES = ("test-", "dev-", "train-")


@dataclass(frozen=True)
class ExportOptions:
    adapter_dir: Path
    format: str
    output: Path
    model_id: str | None = None  # base model; default: the one the adapter records
    manifest: str | None = None  # parity utterances; default: LibriSpeech folders of the speech dir
    max_samples: int = 0  # cap on parity utterances (0 = all)


def parity_rows(manifest: str | None, max_samples: int = 0) -> tuple[list, str]:
    """Real utterances (with transcripts) for the parity check, and where they came from."""

    if manifest:
        rows, where = read_manifest_rows(manifest), manifest
    else:
        root = default_speech_dir()
        subsets = [s for s in list_subsets(root) if s.startswith(LIBRISPEECH_PREFIXES)] if root else []
        if not subsets:
            raise UserError("no parity utterances: pass --manifest (no LibriSpeech folders in $LORA_SPEECH_DIR or ../shared/speech)")
        rows, where = read_librispeech_dir(root, subsets), f"{root} [{'+'.join(subsets)}]"
    rows = rows[:max_samples] if max_samples else rows
    if not rows:
        raise UserError(f"{where}: no usable utterances for the parity check")
    return rows, where


def export_adapter(options: ExportOptions) -> dict:
    """Merge, export, check; returns the report written to `output/export_report.json`."""

    output = output_dir(options.output)
    check_output(options.adapter_dir, output)
    if options.max_samples < 0:
        raise UserError(f"--max-samples {options.max_samples}: must be >= 0 (0 = all)")
    fmt = export_format(options.format, recorded_family(options.adapter_dir))
    rows, where = parity_rows(options.manifest, options.max_samples)
    merged = load_merged(options.adapter_dir, options.model_id)
    fmt = export_format(options.format, merged.family.name)  # the loaded model has the last word
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:  # exported, checked and reported in a temporary folder: an earlier export stays whole until all is done
        started = time.perf_counter()
        with writing(output), quiet_progress_bars():
            resolve_callable(fmt.export)(merged.model, merged.processor, tmp)
        export_seconds = time.perf_counter() - started
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        parity = measure_parity(fmt, tmp, merged, rows)
        report = ExportReport(
            format=fmt.name, family=fmt.family, runtime=fmt.runtime, original=fmt.original,
            adapter_dir=str(options.adapter_dir), **merged.base, output=str(output),
            files={f.name: f.stat().st_size for f in files}, export_seconds=export_seconds,
            parity_data=where, **parity, versions=library_versions())
        write_result(tmp / REPORT_FILE, report)
        replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return to_dict(report)


def check_output(adapter_dir: Path, output: Path) -> None:
    """Before any work: the export replaces `output` only when it is an earlier export (or empty)."""
    if output.exists() and output.resolve() == Path(adapter_dir).resolve():
        raise UserError(f"--output {output}: is the adapter folder itself; choose another folder")
    if output.exists() and not (output / REPORT_FILE).is_file() and (output.is_file() or any(output.iterdir())):
        kind = "a file" if output.is_file() else f"a folder without {REPORT_FILE}"
        raise UserError(f"--output {output}: exists and is {kind}, not an earlier export (which it would replace); "
                        "choose another folder or delete it")


