"""`lora doctor`: print the environment a run would see (versions, threads, GPU, hub, offline models)."""

from __future__ import annotations

import argparse
import os

from lora.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora", description="lora toolkit utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print versions, threads, GPU, hub reachability and offline models")
    return parser


def doctor() -> list[tuple[str, str]]:
    from importlib import metadata

    import torch

    from lora.importers import IMPORTS, read_record
    from lora.model_utils import hub_reachable
    from lora.outputs import library_versions
    from lora.paths import default_speech_dir, imported_models_dir

    rows = [(name, str(version)) for name, version in library_versions().items()]
    rows.append(("cpu cores / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}"))
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    rows.append(("gpu", ", ".join(gpus) or "none (CPU training)"))
    rows.append(("hugging face hub", "reachable" if hub_reachable() else "unreachable (offline: use import names)"))
    for name in IMPORTS:
        package = IMPORTS[name].package
        try:
            installed = f"{package} {metadata.version(package)} installed"
        except metadata.PackageNotFoundError:
            installed = f"{package} NOT installed"
        cached = "converted" if read_record(imported_models_dir() / name) else "not yet converted (first use converts)"
        rows.append((f"offline model {name}", f"{installed}; {cached} in {imported_models_dir()}"))
    rows.append(("speech folder", str(default_speech_dir() or "none ($LORA_SPEECH_DIR or ../shared/speech)")))
    return rows


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        rows = doctor()
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
