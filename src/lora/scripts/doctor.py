"""`lora doctor`: print the environment a run would see (versions, threads, GPU, precision, hub, offline models,
speech folder, audio formats)."""

from __future__ import annotations

import argparse
import os
import shutil

from lora.core import precision as probe
from lora.core.cli import ArgumentParser, run_cli
from lora.core.hub import hub_reachable
from lora.core.outputs import library_versions
from lora.core.paths import default_speech_dir, imported_models_dir
from lora.core.precision import resolve_precision
from lora.importing import imports, read_record


def build_parser() -> argparse.ArgumentParser:
    return ArgumentParser(prog="lora doctor", description=__doc__.split(":", 1)[1].strip())


def doctor() -> list[tuple[str, str]]:
    from importlib import metadata

    import torch

    rows = [(name, str(version)) for name, version in library_versions().items()]
    rows.append(("cpu cores / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}"))
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    rows.append(("gpu", ", ".join(gpus) or "none (CPU training)"))
    rows.append(precision_row(cpu=not gpus))
    rows.append(("hugging face hub", "reachable" if hub_reachable() else "unreachable (offline: use import names)"))
    for name, spec in imports().items():
        package = spec.package
        try:
            installed = f"{package} {metadata.version(package)} installed"
        except metadata.PackageNotFoundError:
            installed = f"{package} NOT installed"
        cached = "converted" if read_record(imported_models_dir() / name) else "not yet converted (first use converts)"
        rows.append((f"offline model {name}", f"{installed}; {cached} in {imported_models_dir()}"))
    rows.append(("speech folder", str(default_speech_dir() or "none ($LORA_SPEECH_DIR or ../shared/speech)")))
    rows.append(audio_formats_row())
    return rows


def audio_formats_row() -> tuple[str, str]:
    """What audio files this machine reads: libsndfile's formats, and M4A/WebM/videos only with ffmpeg (lora.core.audio)."""
    import soundfile as sf

    formats = ", ".join(sorted(f for f in sf.available_formats() if f in ("WAV", "FLAC", "OGG", "MP3", "AIFF")))
    ffmpeg = shutil.which("ffmpeg")
    through = f"M4A/AAC/WebM and videos (MP4, MKV: audio and subtitle streams) through {ffmpeg}"
    return "audio formats", (f"{formats} (libsndfile {sf.__libsndfile_version__}); " +
                             (through if ffmpeg else "no ffmpeg: M4A/AAC/WebM and video rows are refused (apt-get install ffmpeg)"))


def precision_row(cpu: bool) -> tuple[str, str]:
    """What `--mixed-precision auto` trains in here, and why (on a CPU: the cached bf16 probe)."""
    precision, note = resolve_precision("auto", cpu)
    chosen = "bf16 autocast" if precision == "bf16" else "fp32"
    if cpu and note is None and os.environ.get("ACCELERATE_MIXED_PRECISION", "auto").lower() == "auto":
        if precision == "bf16" and (speedup := probe.cpu_bf16_speedup()) is not None:
            note = f"bf16 autocast ran at {speedup:.2f}x the fp32 speed on this CPU (>= {probe.BF16_MIN_SPEEDUP}x)"
        elif precision == "no" and not probe.native_bf16(cpu):
            note = "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    return "training precision (auto)", f"{chosen}{f'; {note}' if note else ''}"


def _main(argv: list[str] | None) -> int:
    build_parser().parse_args(argv)
    rows = doctor()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
