"""A second run over the same large manifest starts at once: its checked, selected and styled rows, cached.

Before its first step a run over a manifest reads and checks every row, splits speakers, selects, styles
the training targets and packs the training rows into `ClipTable` columns (measured on the 100 h scale
manifest, 724k rows: ~17 s of a 35 s start on 2 cores). Those steps are a pure function of the manifest,
the audio files, the run's data options, the base model and this code, so their product is cached under
`$LORA_HOME/prepared_rows/` (or `$LORA_PREPARED_CACHE`) as `<key>.npz` (the table's NumPy columns) +
`<key>.json` (the small eval, replay and canary sets, the data facts, the style summary and the quarantine list).

The key hashes: the manifest's resolved path, size and mtime; the canary manifest's and the local speech
folder's transcripts (path, size, mtime); every option that changes which rows train and how their
targets read; the requested model; the source of the `lora` package itself (any code change re-reads).
On load every audio file the entry names is re-stat'ed: one changed size or mtime, or a missing file,
and the entry is ignored (the full read then re-checks it). A model that resolves differently (e.g.
`auto` once the hub answers) or another target policy restyles from scratch.

Only corpora of `MIN_ROWS` training rows or more are cached (a smaller one is re-read in about a second);
rows with in-memory audio are never cached. `--no-prepared-cache` turns it off. The newest `KEEP`
entries are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lora.core.audio import Span
from lora.core.outputs import write_json_atomic
from lora.core.paths import lora_home
from lora.data.records import Utterance
from lora.data_loader import ClipTable, StringColumn
from lora.results import TargetStyle

log = logging.getLogger("lora")

CACHE_FOLDER = "prepared_rows"
CACHE_VERSION = 1
MIN_ROWS = 20_000  # training rows; below this a full re-read costs about a second
KEEP = 4  # newest entries kept; older ones are deleted when a new one is written
_PACKAGE = Path(__file__).resolve().parent


@dataclass
class PreparedRows:
    """What a run's data stages produce before training, in a form that can be written and read back."""

    table: ClipTable  # the training rows (styled targets included)
    eval: list[Utterance]
    replay: list[Utterance]
    canary: list[Utterance]
    source: dict  # `TrainEvalData.source`
    leaks: dict
    summary: dict  # `pipeline.TrainSummary` as a dict
    style: TargetStyle
    style_model: str  # the transcript cache's model key the targets were styled with ("" when not styled)
    quarantine: str | None  # the quarantine.jsonl text preflight wrote (None: none was written)


# ---------------------------------------------------------------------------------------------
# the key (pure apart from stat calls)


def file_identity(path: str | os.PathLike | None) -> list | None:
    """[resolved path, size, mtime ns] of a file, or None where there is no such file."""
    if not path:
        return None
    try:
        resolved = Path(path).expanduser().resolve()
        st = resolved.stat()
    except OSError:
        return None
    return [str(resolved), st.st_size, st.st_mtime_ns]


def code_digest(package: Path = _PACKAGE) -> str:
    """SHA-256 over the `lora` package's Python source: any code change gives another key."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(settings: dict, files: list[str | os.PathLike | None]) -> str:
    """Hex key of an entry: `settings` (JSON-able options), the identity of each of `files`, the code."""
    blob = json.dumps({"version": CACHE_VERSION, "settings": settings, "files": [file_identity(f) for f in files],
                       "code": code_digest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_dir() -> Path:
    """`$LORA_PREPARED_CACHE` (the benches start cold with it), else `$LORA_HOME/prepared_rows`."""
    return Path(os.environ.get("LORA_PREPARED_CACHE") or lora_home() / CACHE_FOLDER)


# ---------------------------------------------------------------------------------------------
# rows <-> JSON


def _row_dict(u: Utterance) -> dict:
    if not isinstance(u.audio, str | os.PathLike):
        raise TypeError(f"{u.id}: in-memory audio is not cached")
    return {"id": u.id, "speaker": u.speaker, "text": u.text, "audio": os.fspath(u.audio), "sampling_rate": u.sampling_rate,
            "origin": u.origin, "subset": u.subset, "extra": u.extra,
            "span": None if u.span is None else [u.span.start, u.span.end]}


def _row(d: dict) -> Utterance:
    span = Span(*d["span"]) if d.get("span") else None
    return Utterance(d["id"], d["speaker"], d["text"], d["audio"], d["sampling_rate"], d["origin"], d["subset"], d["extra"],
                     span)


def _audio_files(prepared: PreparedRows) -> list[str]:
    paths = set(prepared.table.audio_paths.values.to_list())  # the distinct paths
    for rows in (prepared.eval, prepared.replay, prepared.canary):
        paths.update(os.fspath(u.audio) for u in rows)
    paths.discard("")
    return sorted(paths)


def _stats(paths: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    sizes, mtimes = np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            return None
        sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
    return sizes, mtimes


# ---------------------------------------------------------------------------------------------
# write / read


def save(key: str, prepared: PreparedRows, root: Path | None = None) -> Path | None:
    """Write the entry (temp file + rename, the .npz last so a reader never sees half of one);
    None when the rows cannot be cached (in-memory audio, a file gone, values that are not JSON)."""
    root = root or cache_dir()
    try:
        small = {"eval": [_row_dict(u) for u in prepared.eval], "replay": [_row_dict(u) for u in prepared.replay],
                 "canary": [_row_dict(u) for u in prepared.canary], "source": prepared.source, "leaks": prepared.leaks,
                 "summary": prepared.summary, "style": asdict(prepared.style), "style_model": prepared.style_model,
                 "quarantine": prepared.quarantine}
        json.dumps(small)
        arrays = prepared.table.to_arrays()
    except (TypeError, ValueError) as exc:
        log.debug("prepared rows not cached: %s", exc)
        return None
    files = _audio_files(prepared)
    stats = _stats(files)
    if stats is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / f"{key}.json", small)
    final = root / f"{key}.npz"
    tmp = root / f".{key}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays, **StringColumn(files).to_arrays("files"), **{"files.size": stats[0], "files.mtime_ns": stats[1]})
    os.replace(tmp, final)
    _prune(root)
    return final


def load(key: str, root: Path | None = None) -> PreparedRows | None:
    """The entry for `key`, or None: absent, unreadable, or one of its audio files changed or gone."""
    root = root or cache_dir()
    npz, meta = root / f"{key}.npz", root / f"{key}.json"
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        small = json.loads(meta.read_text(encoding="utf-8"))
        with np.load(npz, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        files = StringColumn.from_arrays(arrays, "files").to_list()
        stats = _stats(files)
        if stats is None or not (np.array_equal(stats[0], arrays["files.size"]) and np.array_equal(stats[1], arrays["files.mtime_ns"])):
            log.info("prepared-rows cache %s: an audio file changed or is gone; reading the manifest again", npz.name)
            return None
        prepared = PreparedRows(ClipTable.from_arrays(arrays), [_row(d) for d in small["eval"]],
                                [_row(d) for d in small["replay"]], [_row(d) for d in small["canary"]], small["source"],
                                small["leaks"], small["summary"], TargetStyle(**small["style"]), small["style_model"],
                                small["quarantine"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("prepared-rows cache %s unreadable (%s); reading the manifest again", npz, exc)
        return None
    os.utime(npz)  # newest use: kept longest by `_prune`
    return prepared


def _prune(root: Path) -> None:
    entries = sorted(root.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[KEEP:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
