"""Writing results: atomic JSON/text files and the run facts every metrics file carries."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from lora.core.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)
# how safetensors (Rust) reports an I/O error: its own exception class, the OS's error number only in the message
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
TRACKED_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "jiwer", "onnxruntime", "ctranslate2")


def check_output_file(path: str | Path, flag: str = "--output") -> None:
    """Refuse, before any work, an output file that cannot be written where it is asked for: the path is a
    folder, a file stands where one of its folders should be, or the folder it goes in cannot be written
    (read-only, no permission): found at the end, that would lose the work."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file name")
    _check_writable_parent(path, flag)


def _check_writable_parent(path: Path, flag: str) -> None:
    """The nearest folder of `path` that exists must be a folder we can write in: outputs are written beside
    themselves (a temp file or folder), then renamed into place."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a folder; pick another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{flag} {path}: cannot write in {parent} (read-only or no permission); pick another path")
            return


def check_not_an_input(path: str | Path, inputs, flag: str = "--output") -> None:
    """Refuse, before any work, an output file that is one of the command's input files (the recording, the
    manifest, a transcript): written at the end, the results replaced it, unsaid (`lora stt talk.flac --output
    talk.flac` left a JSON file where the recording was)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return
    for given in inputs:
        if given and Path(given).expanduser().is_file() and os.path.samefile(path, Path(given).expanduser()):
            raise UserError(f"{flag} {path} is also an input of this command ({given}), which the results would "
                            "replace; pass another file name")


@contextmanager
def writing(path: str | Path):
    """Around writes that make `path` (ours, or a library's: save_pretrained, safetensors, torch.onnx): an I/O
    failure there (a full disk, a read-only folder) leaves as an OSError naming `path`, which the CLI prints as one
    line. Python's own writes name no file, and safetensors raises its own error class, so a full disk was a
    traceback."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except Exception as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def output_dir(path: str | Path, flag: str = "--output") -> Path:
    """The folder an output folder option names, to be replaced as a whole by a temp folder written beside it and
    renamed over it: a symlink's target (beside the link, the rename replaced the link with a real folder, left the
    earlier output where it pointed and the link as a hidden `.NAME.old-PID`), and never the current folder or one
    above it (`--output .` has no name to put the temp folder beside: a ValueError traceback after the model loaded;
    renamed, it would leave the shell in a deleted folder). A folder it cannot be written beside (read-only, no
    permission) is refused here too, before any work: merge and export found it only after loading the model
    (a file in the folder's place is each command's own check: what stands there says what to do)."""
    path = Path(path).expanduser()
    if path.is_symlink():
        path = path.resolve()
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise UserError(f"{flag} {path}: is the current folder or one above it, which the output would replace as a "
                        "whole; pass a new folder's name (e.g. out)")
    _check_writable_parent(path, flag)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write via a temp file in the same folder + rename: readers never see half a file."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Binary twin of write_text_atomic (PNG plots): temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with writing(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should read like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: dict) -> Path:
    return write_text_atomic(path, json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux: /proc/self/statm); the peak where /proc is absent."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_children_mb() -> float:
    """Peak resident memory of the largest finished child process (data-loader workers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def library_versions() -> dict:
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written temp folder into place; an existing folder is swapped out, then removed."""
    tmp, final = Path(tmp), Path(final)
    for path in tmp.rglob("*"):  # safetensors (save_pretrained) writes through a 0600 temp file; results read like any other
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            os.chmod(path, 0o666 & ~_UMASK)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def quiet_progress_bars():
    """No transformers tqdm bars (save/load) while we report our own progress lines."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()
