"""Check every row before a command spends time on it; quarantine the bad ones with a reason.

A row is bad for exactly one reason, the first found in this order: it could not be interpreted
(`BadRow` from `lora.manifest`), a duplicate id, a duplicate audio file, an empty or
whitespace-only transcript, then the audio probe of `lora.audio_check` (missing, a directory,
0 bytes, undecodable or truncated, no samples, NaN/inf, too short, too long).

Duplicates: the first occurrence is kept and later ones are bad. A second id pointing at the
same audio file is bad too, not a warning: it would let one recording sit in both the training
and the evaluation split, and this project reports held-out numbers.

Transcripts: rows from a plain path list (and manifest rows with no text field at all) have
`extra["has_text"] == False` and are not text-checked unless `require_text=True` (training).

Good rows come back as copies with `extra["seconds"]` set to the measured duration, so no later
step needs to decode just to learn a length. Bad rows go to a quarantine JSONL, written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from lora.audio_check import probe_audio
from lora.errors import UserError
from lora.manifest import BadRow, read_source
from lora.utterances import Utterance

log = logging.getLogger("lora")

DUPLICATE_ID = "duplicate id"
DUPLICATE_AUDIO = "duplicate audio"
EMPTY_TEXT = "empty text"
BLANK_TEXT = "whitespace-only text"
NO_TEXT = "no text"


@dataclass(frozen=True)
class PreflightReport:
    """Good rows (with `extra["seconds"]`), bad rows, and where the bad ones were written."""

    good: tuple[Utterance, ...]
    bad: tuple[BadRow, ...]
    source: str = ""
    quarantine: Path | None = None

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
        problems = ", ".join(f"{reason} x{n}" for reason, n in list(self.counts.items())[:3]) or "no rows"
        example = f"; first: {self.bad[0].message}" if self.bad else ""
        listed = f"; all listed in {self.quarantine}" if self.quarantine else ""
        raise UserError(f"{self.source or 'input'}: only {len(self.good)} usable row(s) of {self.total}, "
                        f"need at least {min_good} ({problems}){example}{listed}; fix or remove the bad rows")


def check_rows(rows: Iterable[Utterance], bad: Iterable[BadRow] = (), *, min_seconds: float = 0.1,
               max_seconds: float = 30.0, require_text: bool = False, quiet: bool = False,
               source: str = "") -> PreflightReport:
    """Check every row (decoding each audio once); writes nothing and raises only on bad bounds."""
    from tqdm import tqdm

    if not 0 <= min_seconds < max_seconds:
        raise UserError(f"duration bounds {min_seconds:g}..{max_seconds:g} s are empty; "
                        "pass --min-seconds below --max-seconds (both >= 0)")
    rows = list(rows)
    good: list[Utterance] = []
    found: list[BadRow] = list(bad)
    ids: dict[str, str] = {}
    audio_files: dict[str, tuple[str, str]] = {}
    progress = tqdm(rows, desc="preflight", unit="row", leave=False, disable=True if quiet else None)
    for utt in progress:
        problem = _duplicate(utt, ids, audio_files) or _text_problem(utt, require_text)
        if problem:
            found.append(BadRow(utt.origin, problem[0], utt.id, problem[1]))
            continue
        probe = probe_audio(utt.audio, utt.sampling_rate, min_seconds, max_seconds)
        if not probe.ok:
            found.append(BadRow(utt.origin, probe.reason, utt.id, probe.detail))
            continue
        good.append(replace(utt, extra={**utt.extra, "seconds": probe.seconds}))
    return PreflightReport(tuple(good), tuple(sorted(found, key=_origin_key)), source)


def _origin_key(bad: BadRow) -> tuple[str, int]:
    """Bad rows in file order (`file:line`), whichever stage found them; other origins keep their order."""
    path, _, line = bad.origin.rpartition(":")
    return (path, int(line)) if line.isdigit() else (bad.origin, 0)


def _duplicate(utt: Utterance, ids: dict, audio_files: dict) -> tuple[str, str] | None:
    """Record the row; a later row with a seen id or a seen audio file is the duplicate."""
    if utt.id in ids:
        return DUPLICATE_ID, f"{utt.id!r} first at {ids[utt.id]}"
    ids[utt.id] = utt.origin
    if isinstance(utt.audio, str | Path):
        key = os.path.realpath(utt.audio)
        if key in audio_files:
            first_id, first_origin = audio_files[key]
            return DUPLICATE_AUDIO, f"same file as {first_id!r} at {first_origin}"
        audio_files[key] = (utt.id, utt.origin)
    return None


def _text_problem(utt: Utterance, require_text: bool) -> tuple[str, str] | None:
    if not utt.extra.get("has_text", True):
        return (NO_TEXT, "the source has no transcripts; use a manifest with a text field") if require_text else None
    if not utt.text:
        return EMPTY_TEXT, "the transcript is empty"
    if not utt.text.strip():
        return BLANK_TEXT, f"the transcript is only whitespace ({utt.text!r})"
    return None


def write_quarantine(path: str | Path, bad: Iterable[BadRow]) -> Path:
    """One JSON object per bad row (`origin`, `id`, `reason`, `detail`), via temp file + rename."""
    from lora.outputs import write_text_atomic

    lines = [json.dumps(b.record(), ensure_ascii=False) + "\n" for b in bad]
    return write_text_atomic(path, "".join(lines))


def preflight(rows: Iterable[Utterance], bad: Iterable[BadRow] = (), *, min_seconds: float = 0.1,
              max_seconds: float = 30.0, min_good: int = 1, quarantine_path: str | Path | None = None,
              require_text: bool = False, quiet: bool = False, source: str = "") -> PreflightReport:
    """Check rows, write the quarantine (when a path is given), insist on `min_good` good rows.

    The quarantine is written before the `min_good` check so that a failing run still leaves
    the list of what to fix.
    """
    report = check_rows(rows, bad, min_seconds=min_seconds, max_seconds=max_seconds,
                        require_text=require_text, quiet=quiet, source=source)
    if quarantine_path is not None:
        report = replace(report, quarantine=write_quarantine(quarantine_path, report.bad))
    if report.bad:
        where = f" -> {report.quarantine}" if report.quarantine else ""
        log.warning("preflight: %d of %d rows unusable (%s)%s", len(report.bad), report.total,
                    ", ".join(f"{r} x{n}" for r, n in report.counts.items()), where)
    report.require(min_good)
    return report


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
    if report.quarantine:
        lines.append(f"\nquarantined {len(report.bad)} row(s) -> {report.quarantine}")
    return "\n".join(lines)


def _example(bad: BadRow) -> str:
    return bad.origin + (f": {bad.detail}" if bad.detail else "")
