"""Check every row before a command spends time on it; quarantine the bad ones with a reason.

A row is bad for exactly one reason, the first found in this order: it could not be interpreted
(`BadRow` from `lora.data.manifest`), a duplicate id, a duplicate audio file, an empty or
whitespace-only transcript, then the audio probe of `lora.data.audio_probe` (missing, a directory,
0 bytes, undecodable or truncated, no samples, NaN/inf, too short, too long; for a row that is a segment of a
longer recording, `Utterance.span`: a segment past the file's end, and the bounds held to the segment's length).
A segment is a clip of its own: duplicates, repeats and hygiene key on the file and the span together.

Duplicates: the first occurrence is kept and later ones are bad. A second id pointing at the
same audio file with another transcript or another speaker is bad too, not a warning: the labels
contradict each other, or one recording could sit in both the training and the evaluation split
(this project reports held-out numbers). The same file with the same transcript and speaker under
a new id is a *repeat*: kept and counted (a speaker-disjoint split keeps all repeats on one side;
it only weighs that clip more), as scale corpora made of real clips do.

Scale: `decode=False` reads each distinct audio file's header only (duration, bounds), in parallel
with `workers` threads, and caches the result by (path, size, mtime) (`lora.data.probe_cache`), so
a second run over the same corpus starts at once; the full decode then happens in the data
loader's workers, which quarantine a row that fails it while training goes on.

Transcripts: rows from a plain path list (and manifest rows with no text field at all) have
`extra["has_text"] == False` and are not text-checked unless `require_text=True` (training).

Good rows come back as copies with `extra["seconds"]` set to the measured duration, so no later
step needs to decode just to learn a length. Bad rows go to a quarantine JSONL, written atomically.

Hygiene (`decode=True`, the full-decode path; `hygiene=None` turns it off): every row that passed the
probe is decoded once more and run through `lora.data.hygiene` (silent, dc_constant, clipped,
chars_per_second, duplicate_audio by decoded-sample hash, and unwritable_chars when a `tokenizer` is
given). A "quarantine" finding makes the row bad (reason `hygiene: <check>`); a "warn" finding keeps
the row and lists it in `report.warnings` (shown in `lora check`'s table, never quarantined). Why each
check quarantines or warns is written out in `lora.data.hygiene`'s docstring; in short: quarantine
when training on the row would teach something false (silence -> words, a transcript that cannot
belong to the audio, two labels for one recording, a target the tokenizer cannot write), warn when
the row is real speech with a true label that a person should look at (mild clipping, the same clip
twice with the same label, punctuation the tokenizer drops, a reference model that disagrees).
The header-only path (`decode=False`, scale) skips hygiene: the loader's workers run the cheap audio
checks (silent, dc_constant, clipped) when they decode.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from lora.core.audio import SAMPLE_RATE, FfmpegMissing
from lora.core.errors import UserError
from lora.core.outputs import write_text_atomic
from lora.data.audio_probe import (
    MISSING_FILE,
    NEEDS_FFMPEG,
    RECORDING_MAX_S,
    UNDECODABLE,
    UNREADABLE_FILE,
    Probe,
    probe_audio,
    probe_span,
)
from lora.data.hygiene import (
    QUARANTINE,
    DuplicateTracker,
    Finding,
    HygieneOptions,
    audio_digest,
    audio_findings,
    check_tokenizer,
    quarantine_row,
    text_findings,
)
from lora.data.manifest import NO_TEXT_KEY, TEXT_KEYS, BadRow, read_source
from lora.data.probe_cache import ProbeCache, file_key
from lora.data.records import Utterance

log = logging.getLogger("lora")

DUPLICATE_ID = "duplicate id"
DUPLICATE_AUDIO = "duplicate audio"
EMPTY_TEXT = "empty text"
BLANK_TEXT = "whitespace-only text"
NO_TEXT = "no text"
REPEAT = ("repeat", "")  # not a problem: see the module docstring
# Probe results that depend on this moment or machine, not on the file's bytes: never cached.
UNCACHEABLE = {UNREADABLE_FILE, MISSING_FILE, NEEDS_FFMPEG}


@dataclass(frozen=True)
class PreflightReport:
    """Good rows (with `extra["seconds"]`), bad rows, and where the bad ones were written."""

    good: tuple[Utterance, ...]
    bad: tuple[BadRow, ...]
    source: str = ""
    quarantine: Path | None = None
    repeats: int = 0  # rows repeating an earlier row's file, transcript and speaker (kept)
    warnings: tuple[BadRow, ...] = ()  # kept rows with a hygiene "warn" finding (reason `hygiene: <check>`)

    @property
    def total(self) -> int:
        return len(self.good) + len(self.bad)

    @property
    def seconds(self) -> float:
        """Total duration of the good rows."""
        return float(sum(u.extra.get("seconds", 0.0) for u in self.good))

    @property
    def counts(self) -> dict[str, int]:
        """Bad rows per reason, most frequent first."""
        return dict(Counter(b.reason for b in self.bad).most_common())

    def render(self) -> str:
        """The plain-text summary table `lora-check` prints."""
        return render_report(self)

    def require(self, min_good: int) -> None:
        """Raise a one-line `UserError` when fewer than `min_good` rows are usable."""
        if len(self.good) >= min_good:
            return
        if not self.total:
            raise UserError(f"{self.source or 'input'}: no rows in it; add at least {min_good} (an audio file and its "
                            "transcript each), or point at the data meant")
        problems = ", ".join(f"{reason} x{n}" for reason, n in list(self.counts.items())[:3]) or "no rows"
        example = f"; first: {self.bad[0].message}" if self.bad else ""
        listed = f"; all listed in {self.quarantine}" if self.quarantine else ""
        raise UserError(f"{self.source or 'input'}: only {len(self.good)} usable row(s) of {self.total}, "
                        f"need at least {min_good} ({problems}){example}{listed}; fix or remove the bad rows")


def check_rows(rows: Iterable[Utterance], bad: Iterable[BadRow] = (), *, min_seconds: float = 0.1,
               max_seconds: float = 30.0, require_text: bool = False, quiet: bool = False,
               source: str = "", decode: bool = True, workers: int = 0, cache: bool = True,
               hygiene: HygieneOptions | None = HygieneOptions(), tokenizer=None) -> PreflightReport:
    """Check every row (each distinct audio file probed once); writes nothing, raises only on bad bounds.

    Good rows get `extra["seconds"]` in place (no copies: a corpus of 10^5 rows stays one list).
    With `decode=True` and `hygiene` set, the hygiene checks run too (module docstring);
    `tokenizer` (encode/decode) adds the unwritable_chars check on every transcript.
    """
    if not 0 <= min_seconds < max_seconds:
        raise UserError(f"duration bounds {min_seconds:g}..{max_seconds:g} s are empty; "
                        "pass --min-seconds below --max-seconds (both >= 0)")
    rows = list(rows)
    found: list[BadRow] = list(bad)
    ids: dict[str, str] = {}
    audio_files: dict[str, tuple[str, str, str, str]] = {}
    candidates: list[Utterance] = []
    repeats = 0
    for utt in rows:
        problem = _duplicate(utt, ids, audio_files) or _text_problem(utt, require_text)
        if problem == REPEAT:
            repeats += 1
        elif problem:
            found.append(BadRow(utt.origin, problem[0], utt.id, problem[1]))
            continue
        candidates.append(utt)
    probes = _probe_all(candidates, min_seconds, max_seconds, decode, workers, cache, quiet)
    good: list[Utterance] = []
    for utt, probe in zip(candidates, probes):
        if not probe.ok:
            found.append(BadRow(utt.origin, probe.reason, utt.id, _naming_audio(utt, probe.detail)))
            continue
        utt.extra["seconds"] = probe.seconds
        good.append(utt)
    warnings: list[BadRow] = []
    if decode and hygiene is not None and good:
        good = _hygiene(good, hygiene, tokenizer, workers, found, warnings)
    return PreflightReport(tuple(good), tuple(sorted(found, key=_origin_key)), source, repeats=repeats,
                           warnings=tuple(sorted(warnings, key=_origin_key)))


def _naming_audio(utt: Utterance, detail: str) -> str:
    """`detail` led by the row's audio file where it does not name it already: a row's origin is the line that
    lists it (a manifest's, a transcript's), so "flac decoder lost sync" alone leaves the user to find the file."""
    if not isinstance(utt.audio, str | Path) or str(utt.audio) in detail or str(utt.audio) in utt.origin:
        return detail
    return f"{utt.audio}: {detail}" if detail else str(utt.audio)


def _hygiene(rows: list[Utterance], options: HygieneOptions, tokenizer, workers: int, found: list[BadRow],
             warnings: list[BadRow]) -> list[Utterance]:
    """Run the hygiene checks on rows that passed the probe; quarantine findings go to `found`,
    warnings to `warnings`; returns the rows still good. Audio statistics once per distinct file (and span)."""

    def audio_facts(utt: Utterance) -> tuple[list[Finding], str] | Probe:
        try:
            samples = utt.samples()
        except FfmpegMissing as exc:  # probed (or cached) on a machine that had ffmpeg
            return Probe(0.0, NEEDS_FFMPEG, str(exc))
        except Exception as exc:  # the probe passed, yet this decode failed: the row goes, the run stays
            return Probe(0.0, UNDECODABLE, f"{type(exc).__name__}: {exc}")
        return audio_findings(samples, options), audio_digest(samples)

    keys = [(_realpath(u.audio), u.span) if isinstance(u.audio, str | Path) else None for u in rows]
    first_of: dict = {}
    for i, key in enumerate(keys):
        first_of.setdefault(key if key is not None else ("inline", i), i)
    with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
        facts = dict(zip(first_of.values(), pool.map(lambda i: audio_facts(rows[i]), first_of.values())))
    duplicates = DuplicateTracker()
    seen_digest_of_file: set = set()
    good: list[Utterance] = []
    for i, (utt, key) in enumerate(zip(rows, keys)):
        fact = facts[first_of[key if key is not None else ("inline", i)]]
        if isinstance(fact, Probe):
            found.append(BadRow(utt.origin, fact.reason, utt.id, _naming_audio(utt, fact.detail)))
            continue
        findings, digest = fact
        findings = list(findings)
        has_text = utt.extra.get("has_text", True)
        if has_text:
            findings += text_findings(utt.text, utt.extra["seconds"], options)
            if tokenizer is not None and utt.text.strip():
                found_tok = check_tokenizer(utt.text, tokenizer)
                if found_tok is not None:
                    findings.append(found_tok)
        # the same file again (a repeat, already counted by preflight) is not a content duplicate
        if (key, digest) not in seen_digest_of_file:
            seen_digest_of_file.add((key, digest))
            dup = duplicates.add_digest(utt.id, digest, utt.text if has_text else None)
            if dup is not None:
                findings.append(dup)
        bad_row = quarantine_row(utt.origin, utt.id, findings)
        if bad_row is not None:
            found.append(bad_row)
            continue
        warnings.extend(BadRow(utt.origin, f"hygiene: {f.check}", utt.id, f"{f.detail}; {f.advice}")
                        for f in findings if f.severity != QUARANTINE)
        good.append(utt)
    return good


def _probe_all(rows: list[Utterance], min_seconds: float, max_seconds: float, decode: bool, workers: int,
               cache: bool, quiet: bool) -> list[Probe]:
    """One probe per row; files are probed once each (cache first, then `workers` threads: libsndfile
    releases the GIL), inline audio always. A file whose rows are spans of it is probed without the duration
    bounds and each span held to them (`probe_span`): a talk is longer than any of its segments."""
    from tqdm import tqdm  # deferred: tqdm pulls in more than --help needs

    whole, recording = (min_seconds, max_seconds), (0.0, RECORDING_MAX_S)
    keys_of: dict = {}
    keys = []
    for u in rows:  # one stat per distinct path
        if isinstance(u.audio, str | Path):
            if u.audio not in keys_of:
                keys_of[u.audio] = file_key(u.audio)
            keys.append(None if keys_of[u.audio] is None else (keys_of[u.audio], whole if u.span is None else recording))
        else:
            keys.append(None)
    wanted: dict[tuple, list] = {}  # bounds -> distinct file keys probed within them
    for key in sorted({k for k in keys if k is not None}):
        wanted.setdefault(key[1], []).append(key[0])
    store = ProbeCache() if cache and wanted else None
    known: dict = {}
    for bounds, files in wanted.items():
        found = store.get_many(files, decode, *bounds) if store else {}
        known.update(((k, bounds), probe) for k, probe in found.items())
    todo = [k for k in sorted({k for k in keys if k is not None}) if k not in known]

    def probe_file(key):
        (path, *_), bounds = key
        return key, probe_audio(path, SAMPLE_RATE, *bounds, decode)

    bar = tqdm(total=len(todo) + sum(k is None for k in keys), desc="preflight", unit="file", leave=False,
               disable=True if quiet else None)
    fresh: dict = {}
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
            for key, probe in pool.map(probe_file, todo):
                fresh[key] = probe
                bar.update(1)
    if store:
        for bounds in wanted:
            store.put_many({k: p for (k, b), p in fresh.items() if b == bounds and p.reason not in UNCACHEABLE}, decode, *bounds)
        store.close()
    known.update(fresh)
    out = []
    for utt, key in zip(rows, keys):
        if key is not None:
            probe = known[key]
        elif isinstance(utt.audio, str | Path):  # vanished or not a regular file: probe says why
            probe = probe_audio(utt.audio, utt.sampling_rate, *(whole if utt.span is None else recording), decode)
            bar.update(1)
        else:
            probe = probe_audio(utt.audio, utt.sampling_rate, min_seconds, max_seconds)
            bar.update(1)
        out.append(probe if utt.span is None else probe_span(probe, utt.span, min_seconds, max_seconds))
    bar.close()
    return out


def default_workers() -> int:
    """Threads for header probes: I/O bound, so a few per core."""
    return min(16, 4 * (os.cpu_count() or 1))


def _origin_key(bad: BadRow) -> tuple[str, int]:
    """Bad rows in file order (`file:line`), whichever stage found them; other origins keep their order."""
    path, _, line = bad.origin.rpartition(":")
    return (path, int(line)) if line.isdigit() else (bad.origin, 0)


def _duplicate(utt: Utterance, ids: dict, audio_files: dict) -> tuple[str, str] | None:
    """Record the row; a later row with a seen id, or a seen audio file under another transcript or
    speaker, is the duplicate; the same file, transcript and speaker again is a REPEAT."""
    if utt.id in ids:
        return DUPLICATE_ID, f"{utt.id!r} first at {ids[utt.id]}"
    ids[utt.id] = utt.origin
    if isinstance(utt.audio, str | Path):
        key = (_realpath(utt.audio), utt.span)  # two segments of one recording are two clips
        if key in audio_files:
            first_id, first_origin, text, speaker = audio_files[key]
            if (text, speaker) == (utt.text, utt.speaker):
                return REPEAT
            what = "another transcript" if text != utt.text else "another speaker"
            same = "file" if utt.span is None else f"segment ({utt.span.label} s) of the file"
            return DUPLICATE_AUDIO, f"same {same} as {first_id!r} at {first_origin}, with {what}"
        audio_files[key] = (utt.id, utt.origin, utt.text, utt.speaker)
    return None


@lru_cache(maxsize=1 << 16)
def _realpath(path: str | Path) -> str:
    """realpath, once per distinct path (a corpus repeating clips asks for the same few a lot)."""
    return os.path.realpath(path)


def _text_problem(utt: Utterance, require_text: bool) -> tuple[str, str] | None:
    if not utt.extra.get("has_text", True):
        detail = utt.extra.get(NO_TEXT_KEY) or f"the source has no transcripts; add a text column or field (one of {', '.join(TEXT_KEYS)})"
        return (NO_TEXT, detail) if require_text else None
    if not utt.text:
        return EMPTY_TEXT, "the transcript is empty"
    if not utt.text.strip():
        return BLANK_TEXT, f"the transcript is only whitespace ({utt.text!r})"
    return None


def write_quarantine(path: str | Path, bad: Iterable[BadRow]) -> Path:
    """One JSON object per bad row (`origin`, `id`, `reason`, `detail`), via temp file + rename."""

    lines = [json.dumps(b.record(), ensure_ascii=False) + "\n" for b in bad]
    return write_text_atomic(path, "".join(lines))


def preflight(rows: Iterable[Utterance], bad: Iterable[BadRow] = (), *, min_seconds: float = 0.1,
              max_seconds: float = 30.0, min_good: int = 1, quarantine_path: str | Path | None = None,
              require_text: bool = False, quiet: bool = False, source: str = "", decode: bool = True,
              workers: int = 0, cache: bool = True, hygiene: HygieneOptions | None = HygieneOptions(),
              tokenizer=None) -> PreflightReport:
    """Check rows, write the quarantine (when a path is given), insist on `min_good` good rows.

    The quarantine is written before the `min_good` check so that a failing run still leaves
    the list of what to fix.
    """
    report = check_rows(rows, bad, min_seconds=min_seconds, max_seconds=max_seconds, require_text=require_text,
                        quiet=quiet, source=source, decode=decode, workers=workers, cache=cache,
                        hygiene=hygiene, tokenizer=tokenizer)
    if quarantine_path is not None:
        report = replace(report, quarantine=write_quarantine(quarantine_path, report.bad))
    if report.bad:
        where = f" -> {report.quarantine}" if report.quarantine else ""
        log.warning("preflight: %d of %d rows unusable (%s)%s", len(report.bad), report.total,
                    ", ".join(f"{r} x{n}" for r, n in report.counts.items()), where)
    if report.repeats:
        log.info("preflight: %d row(s) repeat an earlier row's audio, transcript and speaker (kept)", report.repeats)
    report.require(min_good)
    return report


def header_check(rows: Iterable[Utterance], bad: Iterable[BadRow] = (), **options) -> PreflightReport:
    """`preflight` reading headers only (the scale path); the loader's workers decode later."""
    return preflight(rows, bad, decode=False, **options)


def preflight_source(path: str | Path, **options) -> PreflightReport:
    """`read_source(path)` then `preflight(...)`: the two calls every command makes, as one."""
    read = read_source(path)
    return preflight(read.rows, read.bad, source=read.source, **options)


def render_report(report: PreflightReport) -> str:
    """Counts, good audio time, and one aligned line per bad reason with its first example."""
    minutes = report.seconds / 60
    lines = [
        f"source      {report.source or '-'}",
        f"rows        {report.total} read, {len(report.good)} good, {len(report.bad)} bad",
        f"good audio  {report.seconds:.1f} s ({minutes:.1f} min)",
        f"speakers    {len({u.speaker for u in report.good if u.speaker})} (in good rows)",
    ]
    if report.bad:
        first = {}
        for b in report.bad:
            first.setdefault(b.reason, b)
        table = [("reason", "rows", "first example")] + [
            (reason, str(n), _example(first[reason])) for reason, n in report.counts.items()
        ]
        width = [max(len(row[i]) for row in table) for i in range(2)]
        lines.append("")
        for reason, n, example in table:
            lines.append(f"{reason:<{width[0]}}  {n:>{width[1]}}  {example}")
    if report.warnings:
        lines += ["", f"warnings    {len(report.warnings)} row(s) kept but worth a look (not quarantined):"]
        lines += [f"  {w.reason}  {w.origin} ({w.id}): {w.detail}" for w in report.warnings]
    if report.quarantine:
        lines.append(f"\nquarantined {len(report.bad)} row(s) -> {report.quarantine}")
    return "\n".join(lines)


def _example(bad: BadRow) -> str:
    return bad.origin + (f": {bad.detail}" if bad.detail else "")
