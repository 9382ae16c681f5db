"""Style-preserving training targets (target policy "styled", the families' default).

LibriSpeech references are UPPERCASE without punctuation and FSDD's are bare digit words; training on
them (or on a lower/sentence-cased copy) teaches a model that writes "For a full hour, he had paced."
to stop punctuating and capitalising. Instead, each training clip whose reference has no style of its
own (`lora.core.text.has_style`) is transcribed once by the BASE model, and the base model's casing and
punctuation are carried onto the matching reference words (`lora.data.alignment.carry_style`): the
words stay the reference's, the orthography becomes the model's own. References with style (LJSpeech,
JFK) keep theirs. The result goes into `Utterance.extra["target"]`, which the loader and
`prepare_dataset` hand to `family.label_ids`; a joined clip gets its parts' targets joined; replay rows
are styled like the rest.

With `--style-consensus`, a reference text spoken on several clips (a prompt list: digits, commands,
keywords) gets one styled form, the one most of its clips give (`consensus_targets`): the style of "NINE" is a property of the text,
and the base model's mishearing of one take ("" or "Mm-hmm," for a nine) says nothing about it. Without
this, 29% of Moonshine's targets for the digit recipe's training speakers were not "Nine."-like: "nine"
(19%: no capital, no stop, the base model wrote nothing), "Nine" (5%), "Nine?" (3%, from "Or?"), "Eight,"
(2%), and joined clips chained them ("Eight, nine Three.").

On a corpus of many distinct clips (`--style-on-draw`), the clips without a cached transcript are not
transcribed before training: `DrawStyler` transcribes each when a training micro-batch first draws it (the
model in training with its adapters off) and rebuilds that batch's labels, so the first step does not wait for
an inference pass over the corpus.

Base transcripts are cached in one JSON file per base model under `$LORA_HOME/base_transcripts/`:
`{"model": <model id used + path>, "transcripts": {<audio identity>: <text>}}`, the audio identity being
`file:<resolved path>|<size>|<mtime ns>` for files (a re-recorded file is transcribed again) or
`sha1:<hex of the float32 samples>` for in-memory audio (joined clips are never looked up: their
targets come from their parts). Written atomically; entries another run added meanwhile are merged
in before writing, so concurrent runs lose nothing but the race's duplicate work.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lora.core.outputs import write_json_atomic
from lora.core.paths import lora_home
from lora.core.text import has_style
from lora.data.alignment import carry_style
from lora.data.records import Utterance
from lora.data_loader import ClipTable, LoadedBatch, RepeatedStrings
from lora.families import pad_labels
from lora.results import TargetStyle
from lora.style_metrics import capitalisation_f1, orthographic_wer, punctuation_f1, raw_insertions

log = logging.getLogger("lora")

CACHE_FOLDER = "base_transcripts"
CONSENSUS_MIN_CLIPS = 3  # distinct clips of one reference text from which its most common styled form is everyone's
MANIFEST_NAME = "manifest.jsonl"  # a LibriSpeech-layout folder's original-case transcripts (../shared/speech has one)


def attach_original_text(rows: list[Utterance], root: Path | None) -> int:
    """`extra["original_text"]` from `root/manifest.jsonl` for rows read from the folder's UPPERCASE
    *.trans.txt (LJSpeech and JFK keep their case and punctuation only there); only where the two agree
    word for word once case and punctuation are set aside. Returns the rows given one."""
    path = Path(root) / MANIFEST_NAME if root else None
    if path is None or not path.is_file():
        return 0
    texts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row.get("id"), str) and isinstance(row.get("text"), str):
                texts[row["id"]] = row["text"]
    given = 0
    for u in rows:
        original = texts.get(u.id)
        if original and has_style(original) and _bare(original) == _bare(u.text):
            u.extra["original_text"] = original
            given += 1
    return given


def _bare(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w\s']", " ", text).lower().split())]


def own_text(u: Utterance) -> str:
    """The transcript with its own style where the source has one (see `attach_original_text`)."""
    return u.extra.get("original_text") or u.text


def audio_identity(u: Utterance) -> str:
    """The cache key of a clip's audio: file path + size + mtime (+ the span, for a segment of the file), or a hash
    of in-memory samples."""
    if isinstance(u.audio, str | os.PathLike):
        return file_identity(u.audio) + ("" if u.span is None else f"@{u.span.label}")
    return "sha1:" + hashlib.sha1(np.ascontiguousarray(u.samples(), dtype=np.float32).tobytes()).hexdigest()


def file_identity(path: str | os.PathLike) -> str:
    """A file's cache key: its resolved path (links followed, as `Path.resolve`), size and mtime; OSError if unreadable."""
    identity = file_identities([os.fspath(path)])[0]
    if identity is None:
        Path(path).resolve().stat()  # raises the OSError that says why
        raise FileNotFoundError(errno.ENOENT, "unreadable a moment ago", os.fspath(path))  # back between the two looks
    return identity


def file_identities(paths: list[str]) -> list[str | None]:
    """`file_identity` of each path (None: unreadable), with each folder resolved once: a corpus's clips
    share a few folders, and resolving every path whole cost 0.14 s for the scale corpus's 2,418 clips,
    paid before the first step."""
    folders: dict[str, str] = {}
    identities: list[str | None] = []
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        full = os.path.join(real, name)
        try:
            if os.path.islink(full):  # the file itself a link: resolved as Path.resolve does
                full = os.path.realpath(full)
            st = os.stat(full)
        except OSError:
            identities.append(None)
            continue
        identities.append(f"file:{full}|{st.st_size}|{st.st_mtime_ns}")
    return identities


class TranscriptCache:
    """Base-model transcripts of clips, one JSON file per model (see the module docstring)."""

    def __init__(self, model_key: str, root: Path | None = None):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key.rsplit("/", 1)[-1])[:60]
        digest = hashlib.sha1(model_key.encode("utf-8")).hexdigest()[:10]
        self.model_key = model_key
        self.path = (root or lora_home() / CACHE_FOLDER) / f"{slug}-{digest}.json"
        self.entries: dict[str, str] = self._read()
        self.added = 0

    def _read(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("%s: damaged base-transcript cache, starting it again", self.path)
            return {}
        return dict(data.get("transcripts", {})) if data.get("model") == self.model_key else {}

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, text: str) -> None:
        self.entries[key] = text
        self.added += 1

    def save(self) -> None:
        if not self.added:
            return
        merged = self._read() | self.entries
        try:
            write_json_atomic(self.path, {"model": self.model_key, "transcripts": merged})
        except OSError as exc:  # a read-only `$LORA_HOME`: kept for this run only (a rerun transcribes them again)
            log.warning("warning: %s: cannot write the base-transcript cache (%s); kept for this run only",
                        self.path, exc.strerror or exc)
        self.entries, self.added = merged, 0


def style_rows(rows: list[Utterance], transcribe: Callable[[list[Utterance]], list[str]], cache: TranscriptCache,
               consensus: bool = False, on_draw_over: int | None = None) -> TargetStyle:
    """Set `extra["target"]` on the rows whose reference lacks style (in place); joined clips join their parts'.

    `transcribe(rows) -> texts` is the base model's greedy output (called once, on the cache misses);
    `consensus`: a text spoken on several clips takes its most common styled form (`consensus_targets`).
    `on_draw_over`: with more distinct clips to style than this (and neither `consensus` nor joined clips,
    which need every clip's transcript first), the cache misses are not transcribed here: their rows keep
    no target, and `DrawStyler` styles them as training first draws them. The choice depends on the corpus,
    not on what the cache holds, so a resumed run makes the one its first run made.
    """
    unique: dict[str, Utterance] = {}
    for u in rows:
        unique.setdefault(u.id, u)
    singles = [u for u in unique.values() if "joined_from" not in u.extra]
    joined = [u for u in unique.values() if "joined_from" in u.extra]
    styled_text = functools.lru_cache(maxsize=None)(has_style)  # transcripts repeat in a corpus that reuses clips
    plain = [u for u in singles if not styled_text(own_text(u))]
    for u in singles:
        if styled_text(own_text(u)):
            u.extra["target"] = own_text(u)  # LJSpeech / JFK: their own orthography
    by_path: dict[tuple, str] = {}  # a corpus that repeats clips stats each clip (file, or segment of one) once

    def identity(u: Utterance) -> str:
        if isinstance(u.audio, str | os.PathLike):
            clip = (os.fspath(u.audio), u.span)
            if clip not in by_path:
                by_path[clip] = audio_identity(u)
            return by_path[clip]
        return audio_identity(u)

    keys = {u.id: identity(u) for u in plain}
    missing_by_key: dict[str, Utterance] = {}  # one transcription per distinct audio (repeats of a clip share it)
    for u in plain:
        if cache.get(keys[u.id]) is None:
            missing_by_key.setdefault(keys[u.id], u)
    missing = list(missing_by_key.values())
    hits = sum(1 for u in plain if keys[u.id] not in missing_by_key)  # rows whose transcript was cached before this run
    on_draw = (on_draw_over is not None and not consensus and not joined
               and len(set(keys.values())) > on_draw_over)
    pending = 0
    if on_draw:  # the misses are transcribed in training, as first drawn (DrawStyler)
        pending = len(plain) - hits
        plain = [u for u in plain if keys[u.id] not in missing_by_key]
        if missing:
            log.info("styled targets: %d clip(s) without a cached base transcript are styled as training first draws "
                     "them (%d rows cached)", len(missing), hits)
        missing, missing_by_key = [], {}
    elif missing:
        log.info("styled targets: transcribing %d clip(s) with the base model (%d rows cached)", len(missing), hits)
        for key, text in zip(missing_by_key, transcribe(missing), strict=True):
            cache.put(key, text)
        cache.save()
    matched = words = 0
    carried: dict[tuple[str, str], tuple[str, int, int]] = {}  # repeats of a clip align once
    for u in plain:
        pair = (u.text, cache.get(keys[u.id]) or "")
        if pair not in carried:
            carried[pair] = carry_counted(*pair)
        target, n, n_matched = carried[pair]
        matched += n_matched
        words += n
        u.extra["target"] = target
    consensus = consensus_targets(plain, keys) if consensus else 0
    for u in joined:
        parts = [unique.get(i) for i in u.extra["joined_from"]]
        if any(p is None for p in parts):
            raise ValueError(f"joined clip {u.id}: a part is not among the training rows")
        u.extra["target"] = " ".join(p.extra.get("target") or own_text(p) for p in parts)
    styled = len(plain) + pending
    return TargetStyle(policy="styled", rows=len(singles), own_style_rows=len(singles) - styled, styled_rows=styled,
                       joined_rows=len(joined), reference_words=words, words_with_base_style=matched, consensus_rows=consensus,
                       coverage=matched / words if words else None, transcribed=len(missing),
                       cache_hits=hits, cache_path=str(cache.path), on_draw=on_draw, pending_rows=pending)


class DrawStyler:
    """Styled targets for the rows whose clip had no cached base transcript when training began
    (`style_rows` with `on_draw_over`): the training process transcribes such a clip the first time a
    micro-batch draws it, with the model's adapters off (`transcribe(rows, model)`: the base model,
    weight for weight, as after training's baseline), carries the style onto its reference and rebuilds
    the batch's labels (the loader's workers tokenised the sentence-cased reference). So the first step
    waits for one batch's clips, not for a pass over the corpus, and a short run transcribes only the clips
    it draws.

    Rows whose clip is in the cache by now (another run, or this one before a restart) get their target
    in the table up front, so the workers tokenise it and nothing is redone. Transcripts go into the
    cache when `save` is called (the trainer calls it with each checkpoint and at the end): a resumed run
    finds every transcript its first run used, and the same targets.
    """

    def __init__(self, table: ClipTable, cache: TranscriptCache, transcribe: Callable[[list[Utterance], object], list[str]],
                 label_ids: Callable[[str], list[int]], bucket: bool = False):
        self.table, self.cache, self.transcribe, self.label_ids, self.bucket = table, cache, transcribe, label_ids, bucket
        self.key_names: list[str] = []  # audio identities of the pending clips
        self.row_key = np.full(len(table), -1, dtype=np.int32)  # index into key_names per table row; -1: has its target
        self.transcripts: dict[int, str] = {}  # key -> base transcript (from the cache, or transcribed here)
        self._carried: dict[tuple[int, int], tuple[str, int, int]] = {}  # (text code, key) -> carry_counted(...)
        self._styled_rows: set[int] = set()
        self.resolved_rows = self.transcribed = self.words = self.matched = 0
        self.seconds = 0.0
        self._find_pending()
        self.pending_rows = int((self.row_key >= 0).sum())

    def _find_pending(self) -> None:
        table = self.table
        if table.targets is None:
            table.targets = RepeatedStrings([""] * len(table))
        targets, texts = table.targets, table.texts
        empty_codes = np.flatnonzero(np.diff(targets.values.offsets) == 0)  # the code of "" (if any row has none)
        rows = np.flatnonzero(np.isin(targets.codes, empty_codes))
        if not rows.size:
            return
        plain_text = np.zeros(len(texts.values), dtype=bool)  # per distinct text: written without style
        for c in np.unique(texts.codes[rows]):
            plain_text[c] = not has_style(texts.values[int(c)])
        rows = rows[plain_text[texts.codes[rows]]]
        key_index: dict[str, int] = {}
        path_codes = table.audio_paths.codes[rows]
        key_of_code = np.full(len(table.audio_paths.values), -1, dtype=np.int32)
        codes = [int(c) for c in np.unique(path_codes) if table.audio_paths.values[int(c)]]  # each file stat'ed once
        identities = dict(zip(codes, file_identities([table.audio_paths.values[c] for c in codes]), strict=True))
        # a segment of a file (`Utterance.span`) is a clip of its own: keyed by the file's identity and the span
        segment = np.zeros(len(rows), bool) if table.span_starts is None else ~np.isnan(table.span_starts[rows])
        whole_codes = set(np.unique(path_codes[~segment]).tolist())
        for code, identity in identities.items():
            if identity is None:  # gone since preflight (the loader's worker quarantines its rows)
                key_of_code[code] = -2
            elif code in whole_codes:
                key_of_code[code] = key_index.setdefault(identity, len(key_index))
        self.row_key[rows] = np.where(segment, -1, np.maximum(key_of_code[path_codes], -1))
        for r in rows[segment]:
            identity = identities.get(int(table.audio_paths.codes[r]))
            if identity is not None:
                self.row_key[r] = key_index.setdefault(f"{identity}@{table.span(int(r)).label}", len(key_index))
        for r in rows[(key_of_code[path_codes] == -1) & ~segment]:  # inline samples (small corpora): a hash of each clip's samples
            self.row_key[r] = key_index.setdefault(audio_identity(table.record(int(r))), len(key_index))
        self.key_names = list(key_index)
        for k, name in enumerate(self.key_names):
            text = self.cache.get(name)
            if text is not None:
                self.transcripts[k] = text
        self._resolve_cached(rows)

    def _resolve_cached(self, rows: np.ndarray) -> None:
        """Targets in the table for the rows whose clip is in the cache already (one carry per text and clip)."""
        keys = self.row_key[rows]
        known = rows[np.isin(keys, np.fromiter(self.transcripts, dtype=np.int32, count=len(self.transcripts)))]
        if not known.size:
            return
        pair = self.table.texts.codes[known].astype(np.int64) * max(len(self.key_names), 1) + self.row_key[known]
        _, first, inverse, counts = np.unique(pair, return_index=True, return_inverse=True, return_counts=True)
        targets = []
        for r, count in zip(known[first], counts, strict=True):  # one carry per (text, clip), counted per row
            target, n, matched = self._carry(int(r))
            targets.append(target)
            self.words += n * int(count)
            self.matched += matched * int(count)
        self.table.targets = self.table.targets.replaced(known, targets, inverse)
        self.row_key[known] = -1
        self.resolved_rows = int(known.size)

    def _carry(self, row: int) -> tuple[str, int, int]:
        """The row's styled target, its reference's words and those given the base style (`carry_counted`)."""
        key = (int(self.table.texts.codes[row]), int(self.row_key[row]))
        if key not in self._carried:
            self._carried[key] = carry_counted(self.table.texts[row], self.transcripts[key[1]])
        return self._carried[key]

    def __call__(self, loaded: LoadedBatch, model) -> LoadedBatch:
        """The micro-batch with its pending rows styled (their clips transcribed first if new)."""
        pending = [r for r in loaded.rows if self.row_key[r] >= 0]
        if not pending:
            return loaded
        started = time.perf_counter()
        new: dict[int, int] = {}  # key -> a row of it (repeats of a clip are transcribed once)
        for r in pending:
            k = int(self.row_key[r])
            if k not in self.transcripts:
                new.setdefault(k, r)
        if new:
            texts = self.transcribe([self.table.record(r) for r in new.values()], model)
            for k, text in zip(new, texts, strict=True):
                self.transcripts[k] = text
                self.cache.put(self.key_names[k], text)
            self.transcribed += len(new)
        labels = []
        for r in loaded.rows:
            if self.row_key[r] >= 0:
                target, n, matched = self._carry(r)
                if r not in self._styled_rows:
                    self._styled_rows.add(r)
                    self.words, self.matched = self.words + n, self.matched + matched
            else:
                target = self.table.targets[r] or self.table.texts[r]
            labels.append(self.label_ids(target))
        tensors = dict(loaded.tensors)
        tensors["labels"] = pad_labels(labels, self.bucket)
        self.seconds += time.perf_counter() - started
        return dataclasses.replace(loaded, tensors=tensors, tokens=sum(len(ids) for ids in labels))

    def save(self) -> None:
        self.cache.save()

    def summary(self, style: TargetStyle) -> TargetStyle:
        """`style` (from `style_rows`) with what happened in training: rows found in the cache since, clips
        transcribed as drawn, the word coverage of every row styled so far."""
        words, matched = style.reference_words + self.words, style.words_with_base_style + self.matched
        return dataclasses.replace(style, pending_rows=self.pending_rows, cache_hits=style.cache_hits + self.resolved_rows,
                                   transcribed_on_draw=self.transcribed, seconds_on_draw=self.seconds, reference_words=words,
                                   words_with_base_style=matched, coverage=matched / words if words else None)


def carry_counted(reference: str, base_output: str) -> tuple[str, int, int]:
    """`carry_style`'s target, with the reference's word count and how many of those took the base model's style."""
    target, coverage = carry_style(reference, base_output)
    n = len(reference.split())
    return target, n, round(coverage * n)


def consensus_targets(rows: list[Utterance], audio_keys: dict[str, str], min_clips: int = CONSENSUS_MIN_CLIPS) -> int:
    """Give every row of a reference text spoken on at least `min_clips` distinct clips that text's most
    common styled target (ties: the earliest seen); returns how many rows changed. In place on
    `extra["target"]`. Counted per distinct clip (`audio_keys[id]`): a clip repeated under new ids votes once.
    """
    votes: dict[str, dict[str, str]] = {}  # reference text -> {audio key: styled target}
    for u in rows:
        votes.setdefault(u.text, {}).setdefault(audio_keys[u.id], u.extra["target"])
    chosen: dict[str, str] = {}
    for text, by_clip in votes.items():
        if len(by_clip) >= min_clips:
            counts: dict[str, int] = {}
            for target in by_clip.values():
                counts[target] = counts.get(target, 0) + 1
            chosen[text] = max(counts, key=counts.__getitem__)  # dicts keep insertion order: ties go to the first seen
    changed = 0
    for u in rows:
        target = chosen.get(u.text)
        if target is not None and target != u.extra["target"]:
            u.extra["target"] = target
            changed += 1
    return changed


def styled_reference(reference: str, base_output: str) -> str:
    """The reference as a styled target would write it: its own style, else the base output's carried onto it."""
    return reference if has_style(reference) else carry_style(reference, base_output)[0]


def style_scores(refs: list[str], base_outputs: list[str], tuned_outputs: list[str]) -> dict:
    """Style figures of one before/after pair of runs over the same clips (the canary's `CanaryResult` fields).

    Orthographic WER is scored against `styled_reference`s: LibriSpeech's UPPERCASE references would make
    every cased word an error for both models; written in the base model's style they ask "same words, same
    orthography as before?" (the base model's own orthographic WER then counts only its word errors)."""
    styled = [styled_reference(r, b) for r, b in zip(refs, base_outputs, strict=True)]
    return {"orthographic_wer_before": orthographic_wer(styled, base_outputs),
            "orthographic_wer_after": orthographic_wer(styled, tuned_outputs),
            "punctuation_f1": punctuation_f1(base_outputs, tuned_outputs).f1,
            "capitalisation_f1": capitalisation_f1(base_outputs, tuned_outputs).f1,
            "raw_insertions_before": raw_insertions(refs, base_outputs), "raw_insertions_after": raw_insertions(refs, tuned_outputs)}
