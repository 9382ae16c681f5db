"""The `Utterance` record every source produces, the `BadRow`s and `ManifestRead` a reader returns, and the
LibriSpeech-layout folder reader.

An utterance is real recorded speech plus its transcript. Audio stays lazy (a path) until
`Utterance.samples()` decodes it, unless a source already holds decoded samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE, Span, load_audio, to_mono_16k
from lora.core.errors import UserError
from lora.data.formats import decode_utf8

# LibriSpeech split names as the hub dataset calls them -> folder names on disk.
SPLIT_FOLDERS = {
    "train.100": "train-clean-100",
    "train.360": "train-clean-360",
    "train.500": "train-other-500",
    "train.clean.100": "train-clean-100",
    "train.clean.360": "train-clean-360",
    "train.other.500": "train-other-500",
    "validation": "dev-clean",
    "validation.clean": "dev-clean",
    "validation.other": "dev-other",
    "test": "test-clean",
    "test.clean": "test-clean",
    "test.other": "test-other",
}


@dataclass(slots=True)
class Utterance:
    """One real recording and its transcript.

    `audio` is a file path, raw encoded bytes, or already-decoded float samples at
    `sampling_rate`. `origin` names where the row came from (`file:line`) for error messages.
    `span`: the stretch of the file this utterance is (a segment of a longer recording); None: the whole file.
    """

    id: str
    speaker: str
    text: str
    audio: str | Path | bytes | np.ndarray | list
    sampling_rate: int = SAMPLE_RATE
    origin: str = ""
    subset: str = ""
    extra: dict = field(default_factory=dict)
    span: Span | None = None

    def samples(self) -> np.ndarray:
        """Float32 mono 16 kHz samples (decoded on demand; of the span only, where the row has one)."""
        if isinstance(self.audio, np.ndarray | list):
            return to_mono_16k(np.asarray(self.audio, dtype=np.float32), self.sampling_rate)
        return load_audio(self.audio, self.span)


@dataclass(frozen=True)
class BadRow:
    """A row that will not be used, and why. `reason` is a short category (counted in reports);
    `detail` says what exactly was found."""

    origin: str
    reason: str
    id: str = ""
    detail: str = ""

    @property
    def message(self) -> str:
        return f"{self.origin}: {self.reason}" + (f" ({self.detail})" if self.detail else "")

    def record(self) -> dict:
        """The quarantine.jsonl object for this row."""
        return {"origin": self.origin, "id": self.id, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class ManifestRead:
    """What a source yielded: interpretable rows, uninterpretable rows, and what was read."""

    rows: tuple[Utterance, ...]
    bad: tuple[BadRow, ...] = ()
    source: str = ""
    kind: str = ""  # jsonl | json | csv | tsv | list | librispeech | sidecar


def split_folder(split: str) -> str:
    """Map a hub split name (`train.100`, `test`, ...) to a LibriSpeech folder name."""
    return SPLIT_FOLDERS.get(split, split)


def read_librispeech_dir(root: Path, subsets: list[str] | None = None) -> list[Utterance]:
    """All utterances under `root/<subset>/<speaker>/<chapter>/*.trans.txt`, sorted by id.

    `subsets=None` reads every subset folder found; `root` may also be one subset folder itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory; pass a LibriSpeech-layout folder or a manifest")
    trans_files = sorted(root.glob("*/*/*/*.trans.txt")) + sorted(root.glob("*/*/*.trans.txt"))
    rows: list[Utterance] = []
    seen: set[str] = set()
    for trans in trans_files:
        rel = trans.relative_to(root).parts
        subset = rel[0] if len(rel) == 4 else root.name
        if subsets is not None and subset not in subsets:
            continue
        content = decode_utf8(trans, trans.read_bytes(), "transcript file")  # not UTF-8: its file:line, not a traceback
        for lineno, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = _find_audio(trans.parent, utt_id)
            if audio is None or utt_id in seen:
                continue
            seen.add(utt_id)
            rows.append(
                Utterance(
                    id=utt_id,
                    speaker=utt_id.split("-")[0],
                    text=text.strip(),
                    audio=audio,
                    origin=f"{trans}:{lineno}",
                    subset=subset,
                )
            )
    return sorted(rows, key=lambda u: u.id)


def list_subsets(root: Path) -> list[str]:
    """Subset folders of a LibriSpeech-layout root that hold at least one transcript."""
    return sorted({p.relative_to(root).parts[0] for p in Path(root).glob("*/*/*/*.trans.txt")})


def _find_audio(folder: Path, utt_id: str) -> Path | None:
    for ext in (".flac", ".wav", ".ogg"):
        candidate = folder / f"{utt_id}{ext}"
        if candidate.is_file():
            return candidate
    return None
