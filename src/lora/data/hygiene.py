"""Data hygiene: is a decoded clip and its transcript fit to train or score on? Named checks, each
with a threshold, a message that says what is wrong, and advice on what to do.

`lora.data.preflight` answers "can this row be read at all?" (file exists, decodes, not truncated, has
text). This module runs after it, on decoded samples, and answers "does this row teach the model
something true?". Each check returns a `Finding(check, severity, detail, advice)`.

Severity: "quarantine" means the row would teach something false or nothing (drop it, as preflight
does with unreadable rows); "warn" means the row is real speech with a true label but something is
off that a person should look at (keep it; report it).

Checks and why each one quarantines or warns:

* `silent` (quarantine): the speech level of the mono mix (the RMS of its loudest 10% of 20 ms frames)
  below `silent_rms` (1e-3). Training "silence -> words" teaches the decoder to hallucinate on silence.
  The loudest frames, not the whole clip: speech is loud in its words and quiet between them, so a quiet
  but clear recording has a low whole-clip RMS (LibriSpeech dev-clean 1988-24833-0000 scaled by -30 dB:
  7.1e-4, which Moonshine base still transcribes word for word) while its words stand well above the
  threshold (1.8e-3); room tone is about as loud in its loudest frames as overall (1.1-1.3x), speech
  1.2-3.1x. Real clips: the 326 of ../shared/speech have speech levels 0.0072-0.32 and the 2100 of
  ../shared/speech-extra 0.0039-0.37, so 1e-3 leaves 3.9x margin (whole-clip RMS 0.0021-0.170).
* `dc_constant` (quarantine): the waveform is constant (AC RMS = std below `min_ac_rms`, in its loudest
  frames too, as `silent` measures, while |mean| is not silent), or dominated by a DC offset: |mean| > `max_abs_mean` (0.05) or |mean| >
  `max_mean_to_std` x std (2.0). Real clips: |mean| <= 0.008 (6x margin) and |mean|/std <= 0.22
  (speech) / 0.48 (speech-extra) (4x margin). A large offset means a broken recording or decoding
  chain (wrong sign or bit depth); the models never saw such input. Advice: remove the offset and
  re-export.
* `clipped` (warn at `clipped_warn_share` 1%, quarantine at `clipped_quarantine_share` 20%): share
  of samples with |x| >= `clip_level` (0.999), per channel before mixing (mixing hides flat tops).
  Mildly clipped speech is still real speech with a true label, and dropping it removes exactly the
  loud real-world recordings; once a fifth of the waveform is flat the words are largely gone.
  Real clips: at most 0.015% of samples clipped (speech-extra), none in speech.
* `chars_per_second` (quarantine): letters and digits (`str.isalnum`, so spaces and punctuation do
  not count) of the transcript per second of audio outside [`min_chars_per_second`,
  `max_chars_per_second`] = [1.0, 40.0]. Outside that range the transcript does not belong to the
  audio (a wrong, truncated or swapped transcript, or cut audio), and training on it teaches
  insertions or deletions. An empty or punctuation-only transcript has 0 characters and fires
  here. Real clips: ../shared/speech 3.44-22.3 (the extremes are FSDD single digits of 0.14-0.8 s;
  LibriSpeech/LJSpeech/JFK sentences sit at 7-15.4), ../shared/speech-extra 1.75-27.5; the bounds
  keep 1.75x below the slowest and 1.45x above the fastest real clip.
* `duplicate_audio` (see `DuplicateTracker`): the same decoded samples under two ids. Different
  transcripts -> quarantine the later row: the two labels contradict each other and at most one is
  right. Same transcript -> warn only: the label is fine, but the clip counts twice (over-weighting)
  and can sit in both the training and the evaluation split; keep one, or keep both in one split.
* `unwritable_chars` (see `check_tokenizer`): characters the model's tokenizer cannot write (encode
  then decode loses or replaces them, e.g. by its unknown token). Quarantine when the loss changes
  the scoring-normalised text (letters or digits lost: the model is trained on a different string
  than the transcript it is scored on); warn when only characters the scoring normaliser drops
  anyway (punctuation, symbols) are lost.
* `annotation` (warn): the transcript holds transcription markup in brackets (`[noise]`, `<unk>`,
  `{laugh}`, `[inaudible]`), as many corpora and transcription services write it. Trained on, the model
  learns to write such tags; they are not speech. Warn, not quarantine: the words around the tag are
  real, and some users want the tags; remove them (or the rows) unless the model should write them.
  Real clips: none in ../shared/speech or ../shared/speech-extra.
* `no_samples` / `non_finite` (quarantine): no samples, or NaN/inf; the statistics above would be
  meaningless. Normally `lora.data.preflight` has already quarantined these.
* `model_disagrees` (see `verify_with_model`, warn): a reference model's CER against the transcript
  is above `max_cer` (0.8): likely mislabelled. Warn, not quarantine: the pretrained model is weak
  exactly on the domains one fine-tunes for (the FSDD isolated digits), so quarantining by its
  disagreement would remove the hard examples the adaptation is meant to learn; a person should
  listen to the flagged rows.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lora.core.audio import SAMPLE_RATE, downmix
from lora.core.text import normalize_for_scoring
from lora.data.manifest import BadRow

QUARANTINE = "quarantine"
WARN = "warn"
SEVERITIES = (QUARANTINE, WARN)

SILENT = "silent"
DC_CONSTANT = "dc_constant"
CLIPPED = "clipped"
CHARS_PER_SECOND = "chars_per_second"
DUPLICATE_AUDIO = "duplicate_audio"
UNWRITABLE_CHARS = "unwritable_chars"
NO_SAMPLES = "no_samples"
NON_FINITE = "non_finite"
MODEL_DISAGREES = "model_disagrees"
ANNOTATION = "annotation"
CHECKS = (SILENT, DC_CONSTANT, CLIPPED, CHARS_PER_SECOND, DUPLICATE_AUDIO, UNWRITABLE_CHARS, NO_SAMPLES,
          NON_FINITE, MODEL_DISAGREES, ANNOTATION)

_SPACE = re.compile(r"\s+")
SPEECH_FRAME_S = 0.02  # `silent` measures the loudest SPEECH_SHARE of frames this long (`speech_level`)
SPEECH_SHARE = 0.1
_ANNOTATION_TAG = re.compile(r"\[[^\[\]]{1,40}\]|<[^<>]{1,40}>|\{[^{}]{1,40}\}")


@dataclass(frozen=True)
class HygieneOptions:
    """Thresholds of the hygiene checks (see the module docstring for where each value comes from)."""

    silent_rms: float = field(default=1e-3, metadata={
        "help": "quarantine as silent when the loudest 10%% of 20 ms frames of the mono mix are below this RMS"})
    min_ac_rms: float = field(default=1e-3, metadata={
        "help": "quarantine as constant when the std (AC RMS) is below this while the mean is not silent"})
    max_abs_mean: float = field(default=0.05, metadata={"help": "quarantine when |mean| (DC offset) exceeds this"})
    max_mean_to_std: float = field(default=2.0, metadata={
        "help": "quarantine when |mean| exceeds this multiple of the std (DC offset dominates the speech)"})
    clip_level: float = field(default=0.999, metadata={"help": "a sample with |x| at or above this counts as clipped"})
    clipped_warn_share: float = field(default=0.01, metadata={"help": "warn when more than this share of samples is clipped"})
    clipped_quarantine_share: float = field(default=0.2, metadata={
        "help": "quarantine when more than this share of samples is clipped"})
    min_chars_per_second: float = field(default=1.0, metadata={
        "help": "quarantine when the transcript has fewer letters/digits per second of audio"})
    max_chars_per_second: float = field(default=40.0, metadata={
        "help": "quarantine when the transcript has more letters/digits per second of audio"})


@dataclass(frozen=True)
class Finding:
    """One check that fired: which, how bad, what exactly was found, and what to do."""

    check: str
    severity: str
    detail: str
    advice: str

    @property
    def message(self) -> str:
        return f"{self.check} ({self.severity}): {self.detail}; {self.advice}"

    def record(self) -> dict:
        return {"check": self.check, "severity": self.severity, "detail": self.detail, "advice": self.advice}


def written_chars(text: str) -> int:
    """Letters and digits of `text` (any script): what a speaker has to say, unlike spaces and punctuation."""
    return sum(ch.isalnum() for ch in text)


def mono(samples: np.ndarray) -> np.ndarray:
    """(frames[, channels]) -> mono float64 mix, the signal a model sees after `lora.core.audio.to_mono_16k`."""
    audio = np.asarray(samples, dtype=np.float64)
    if audio.ndim == 2:
        return downmix(audio)
    if audio.ndim != 1:
        raise ValueError(f"samples have {audio.ndim} dimensions; expected frames[, channels]")
    return audio


def speech_level(x: np.ndarray, sampling_rate: int) -> float:
    """RMS of the loudest `SPEECH_SHARE` of `SPEECH_FRAME_S` frames of mono `x` (of the whole clip when it is
    shorter than a frame): how loud the words are, whatever the pauses between them."""
    size = max(1, round(SPEECH_FRAME_S * sampling_rate))
    frames = len(x) // size
    if frames == 0:
        return float(np.sqrt(np.mean(x * x)))
    energy = np.mean(x[: frames * size].reshape(frames, size) ** 2, axis=1)
    loudest = np.partition(energy, frames - math.ceil(SPEECH_SHARE * frames))[frames - math.ceil(SPEECH_SHARE * frames):]
    return float(np.sqrt(loudest.mean()))


def has_dc_offset(mean: float, std: float, options: HygieneOptions) -> bool:
    """Is a waveform of this mean and standard deviation dominated by a DC offset (the `dc_constant` check)?"""
    return abs(mean) > options.max_abs_mean or abs(mean) > options.max_mean_to_std * std


def audio_findings(samples: np.ndarray, options: HygieneOptions, sampling_rate: int = SAMPLE_RATE) -> list[Finding]:
    """The audio-only checks: no_samples, non_finite, silent, dc_constant, clipped."""
    raw = np.asarray(samples, dtype=np.float64)
    if raw.size == 0:
        return [Finding(NO_SAMPLES, QUARANTINE, "0 samples", "re-export the clip or drop the row")]
    if not np.isfinite(raw).all():
        bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        return [Finding(NON_FINITE, QUARANTINE, f"{bad} of {raw.size} samples are NaN or inf",
                        "re-export the clip or drop the row")]
    x = mono(raw)
    findings = []
    rms = float(np.sqrt(np.mean(x * x)))
    mean, std = float(x.mean()), float(x.std())
    # the loudest frames are at least as loud as the whole clip: measured only where the whole clip is quiet
    level = rms if rms >= options.silent_rms else speech_level(x, sampling_rate)
    ac_level = std if std >= options.min_ac_rms else speech_level(x - mean, sampling_rate)
    if level < options.silent_rms:
        findings.append(Finding(SILENT, QUARANTINE, f"speech level {level:.2e} < {options.silent_rms:g} (RMS of its loudest "
                                f"{SPEECH_SHARE:.0%} of {SPEECH_FRAME_S * 1000:.0f} ms frames; whole clip RMS {rms:.2e})",
                                "the clip holds no audible speech: check the recording or drop the row"))
    elif ac_level < options.min_ac_rms:
        findings.append(Finding(DC_CONSTANT, QUARANTINE, f"constant signal: std {std:.2e} < {options.min_ac_rms:g} "
                                f"around a mean of {mean:+.3f}", "the waveform carries no speech: re-export or drop the row"))
    elif has_dc_offset(mean, std, options):
        findings.append(Finding(DC_CONSTANT, QUARANTINE, f"DC offset {mean:+.3f} (std {std:.3f}; limits |mean| <= "
                                f"{options.max_abs_mean:g} and <= {options.max_mean_to_std:g} x std)",
                                "remove the offset (subtract the mean or high-pass) and re-export, or drop the row"))
    share = float(np.mean(np.abs(raw) >= options.clip_level))
    if share > options.clipped_quarantine_share:
        findings.append(Finding(CLIPPED, QUARANTINE, f"{share:.1%} of samples at |x| >= {options.clip_level:g} "
                                f"(> {options.clipped_quarantine_share:.0%})",
                                "the waveform is mostly flat tops: re-record at a lower gain or drop the row"))
    elif share > options.clipped_warn_share:
        findings.append(Finding(CLIPPED, WARN, f"{share:.1%} of samples at |x| >= {options.clip_level:g} "
                                f"(> {options.clipped_warn_share:.0%})",
                                "listen to it; re-record or re-export at a lower gain if you can"))
    return findings


def text_findings(text: str, seconds: float, options: HygieneOptions) -> list[Finding]:
    """The transcript's own checks: its length against the audio's (chars_per_second), markup in it (annotation)."""
    tags = _ANNOTATION_TAG.findall(text or "")
    markup = [Finding(ANNOTATION, WARN, f"transcription markup in the transcript: {', '.join(dict.fromkeys(tags))}",
                      "remove the tags (the model would learn to write them) unless it should")] if tags else []
    return markup + _length_findings(text, seconds, options)


def _length_findings(text: str, seconds: float, options: HygieneOptions) -> list[Finding]:
    chars = written_chars(text or "")
    if seconds <= 0:
        return []
    rate = chars / seconds
    if chars == 0:
        shown = (text or "").strip()
        what = f"transcript {shown!r} has no letters or digits" if shown else "transcript is empty"
        return [Finding(CHARS_PER_SECOND, QUARANTINE, f"{what} for {seconds:.2f} s of audio",
                        "give the row its transcript or drop it")]
    if rate < options.min_chars_per_second:
        return [Finding(CHARS_PER_SECOND, QUARANTINE, f"{chars} letters/digits in {seconds:.2f} s = {rate:.2f}/s < "
                        f"{options.min_chars_per_second:g}/s: the transcript is too short for the audio",
                        "check that the transcript is complete and belongs to this clip")]
    if rate > options.max_chars_per_second:
        return [Finding(CHARS_PER_SECOND, QUARANTINE, f"{chars} letters/digits in {seconds:.2f} s = {rate:.1f}/s > "
                        f"{options.max_chars_per_second:g}/s: the transcript is too long for the audio",
                        "check that the audio is not cut and that the transcript belongs to this clip")]
    return []


def check_clip(samples: np.ndarray, sampling_rate: int, text: str | None,
               options: HygieneOptions = HygieneOptions()) -> list[Finding]:
    """All per-clip checks on decoded `samples` (frames[, channels]) at `sampling_rate`.

    `text=None` means the row has no transcript (a plain path list): only the audio is checked.
    """
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be positive, got {sampling_rate}")
    findings = audio_findings(samples, options, sampling_rate)
    if text is not None and not any(f.check in (NO_SAMPLES, NON_FINITE) for f in findings):
        findings += text_findings(text, np.asarray(samples).shape[0] / sampling_rate, options)
    return findings


def audio_digest(samples: np.ndarray) -> str:
    """Hash of the decoded samples (float32, shape included): equal digests = the same recording."""
    data = np.ascontiguousarray(samples, dtype=np.float32)
    head = repr(data.shape).encode()
    return hashlib.sha1(head + data.tobytes()).hexdigest()


class DuplicateTracker:
    """Across rows: the same decoded audio under two ids. The first occurrence is kept.

    Transcripts are compared after scoring normalisation ("ZERO" == "zero."): different -> the
    later row is quarantined (contradictory labels), the same -> a warning (over-weighting).
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str, str]] = {}

    def add(self, row_id: str, samples: np.ndarray, text: str | None) -> Finding | None:
        return self.add_digest(row_id, audio_digest(samples), text)

    def add_digest(self, row_id: str, digest: str, text: str | None) -> Finding | None:
        """`add` with the samples' `audio_digest` already computed."""
        text = text or ""
        first = self._seen.get(digest)
        if first is None:
            self._seen[digest] = (row_id, text, normalize_for_scoring(text))
            return None
        first_id, first_text, first_norm = first
        if normalize_for_scoring(text) != first_norm:
            return Finding(DUPLICATE_AUDIO, QUARANTINE,
                           f"same audio as {first_id} but a different transcript ({text!r} vs {first_text!r})",
                           "contradictory labels for one recording: keep the correct one and drop the other")
        return Finding(DUPLICATE_AUDIO, WARN, f"same audio and transcript as {first_id}",
                       "the clip counts twice (over-weighted) and can leak across splits: keep one, "
                       "or keep both in the same split")


def _ids(encoded) -> list[int]:
    """`tokenizers.Encoding` (has `.ids`) or a transformers tokenizer's list of ids."""
    return list(getattr(encoded, "ids", encoded))


def _encode(tokenizer, text: str) -> list[int]:
    try:
        return _ids(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # a `tokenizers.Tokenizer` takes no such keyword
        return _ids(tokenizer.encode(text))


def lost_characters(text: str, written: str) -> list[str]:
    """Characters of `text` (whitespace ignored) that `written` does not reproduce, in order."""
    a, b = _SPACE.sub("", text), _SPACE.sub("", written)
    lost = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            lost.extend(a[i1:i2])
    return lost


def check_tokenizer(text: str, tokenizer) -> Finding | None:
    """Round-trip `text` through `tokenizer` (encode, decode); report characters lost or replaced.

    `tokenizer` needs `encode(text)` (ids or an Encoding with `.ids`) and `decode(ids)`.
    Whitespace differences are ignored (tokenizers may collapse or strip spaces).
    """
    written = tokenizer.decode(_encode(tokenizer, text))
    lost = lost_characters(text, written)
    if not lost:
        return None
    shown = "".join(dict.fromkeys(lost))
    detail = f"the tokenizer cannot write {shown!r} ({len(lost)} character(s)); {text!r} comes back as {written!r}"
    if normalize_for_scoring(written) != normalize_for_scoring(text):
        return Finding(UNWRITABLE_CHARS, QUARANTINE, detail,
                       "the model would learn a different text than it is scored on: transliterate the "
                       "transcript or use a model whose tokenizer covers these characters")
    return Finding(UNWRITABLE_CHARS, WARN, detail,
                   "only characters the scoring normaliser drops are lost; strip them from the training "
                   "targets to keep the targets honest")


def character_error_rate(reference: str, hypothesis: str) -> float:
    """CER of scoring-normalised texts; inf when the reference normalises to nothing but the hypothesis does not."""
    import jiwer

    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    if not ref:
        return 0.0 if not hyp else math.inf
    return float(jiwer.cer(ref, hyp))


def transcribe_rows(samples: Iterable[np.ndarray], transcribe_batch: Callable[[list[np.ndarray]], list[str]],
                    batch_size: int = 16) -> list[str]:
    """One hypothesis per clip, `batch_size` clips per `transcribe_batch` call (a short answer is an error)."""
    clips, hyps = list(samples), []
    for start in range(0, len(clips), batch_size):
        batch = clips[start:start + batch_size]
        out = transcribe_batch(batch)
        if len(out) != len(batch):
            raise ValueError(f"transcribe_batch returned {len(out)} texts for {len(batch)} clips")
        hyps += out
    return hyps


def disagreements(rows: Sequence[tuple[str, str, str]], max_cer: float = 0.8) -> list[tuple[str, Finding]]:
    """(id, finding) for the (id, text, hypothesis) rows whose CER exceeds `max_cer`, in input order."""
    flagged = []
    for row_id, text, hyp in rows:
        cer = character_error_rate(text, hyp)
        if cer > max_cer:
            flagged.append((row_id, Finding(MODEL_DISAGREES, WARN,
                                            f"reference model heard {hyp!r} for {text!r} (CER {cer:.2f} > {max_cer:g})",
                                            "likely mislabelled: listen to the clip and fix or drop the transcript")))
    return flagged


def verify_with_model(rows: Iterable[tuple[str, np.ndarray, str]],
                      transcribe_batch: Callable[[list[np.ndarray]], list[str]],
                      max_cer: float = 0.8, batch_size: int = 16) -> list[tuple[str, Finding]]:
    """Transcribe (id, samples, text) rows with a reference model; warn where CER > `max_cer`.

    Returns (id, finding) for the flagged rows, in input order. Warn, not quarantine: see the
    module docstring (the model is weakest where fine-tuning is needed).
    """
    rows = list(rows)
    hyps = transcribe_rows((samples for _, samples, _ in rows), transcribe_batch, batch_size)
    return disagreements([(row_id, text, hyp) for (row_id, _, text), hyp in zip(rows, hyps)], max_cer)


def quarantine_row(origin: str, row_id: str, findings: Sequence[Finding]) -> BadRow | None:
    """The `lora.data.manifest.BadRow` (for `lora.data.preflight.write_quarantine`) of a row with a quarantine
    finding, reason `hygiene: <check>`; None when the row only has warnings or nothing."""
    bad = [f for f in findings if f.severity == QUARANTINE]
    if not bad:
        return None
    detail = "; ".join(f"{f.check}: {f.detail}; {f.advice}" for f in bad)
    return BadRow(origin=origin, reason=f"hygiene: {bad[0].check}", id=row_id, detail=detail)


def summarize(findings: Sequence[Finding]) -> dict[str, int]:
    """Count findings per `check:severity`."""
    counts: dict[str, int] = {}
    for f in findings:
        key = f"{f.check}:{f.severity}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
