"""Bad inputs for `lora.data.hygiene`: real clips of ../shared/speech made bad, each with its exact finding.

Never synthetic audio: every clip below is a real recording, silenced (scaled by 0), offset (DC),
driven into clipping by gain, resampled, cut short, made stereo, duplicated, or paired with a wrong,
too long, empty or punctuation-only transcript. Thresholds are probed at their edges with the real
clip's own measured value. Tokenizer cases use the real tokenizers of the imported models
(tokenizer files only) and two real vocabularies without byte fallback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora.data.hygiene import (
    CHARS_PER_SECOND,
    CLIPPED,
    DC_CONSTANT,
    DUPLICATE_AUDIO,
    MODEL_DISAGREES,
    NO_SAMPLES,
    NON_FINITE,
    QUARANTINE,
    SILENT,
    UNWRITABLE_CHARS,
    WARN,
    DuplicateTracker,
    HygieneOptions,
    check_clip,
    check_tokenizer,
    speech_level,
    verify_with_model,
    written_chars,
)

DIGIT = "fsdd/9201/1/9201-1-0000.flac"  # "zero", george
DIGIT_TAKE2 = "fsdd/9201/1/9201-1-0010.flac"  # "zero", george, another take
SENTENCE = "test-clean/1089/134686/1089-134686-0000.flac"  # 10.4 s
JFK = "jfk/9101/1/9101-1-0000.flac"
QUIET = "dev-clean/1988/24833/1988-24833-0000.flac"  # RMS 0.0226; scaled by -30 dB its whole-clip RMS is 7.1e-4
RATE = 16_000
DEFAULT = HygieneOptions()


class Clips:
    """Real clips by path, their transcripts, and the real clip with the lowest speech level (`speech_level`)."""

    def __init__(self, speech_dir: Path) -> None:
        self.rows = {r["path"]: r for r in (json.loads(line) for line in
                                            (speech_dir / "manifest.jsonl").read_text().splitlines() if line)}
        self.audio = {p: sf.read(speech_dir / p, dtype="float32")[0] for p in (DIGIT, DIGIT_TAKE2, SENTENCE, JFK, QUIET)}
        level = {p: speech_level(sf.read(speech_dir / p, dtype="float64")[0], RATE) for p in self.rows}
        self.quietest = min(level, key=level.get)
        self.audio[self.quietest] = sf.read(speech_dir / self.quietest, dtype="float32")[0]
        self.quietest_level = level[self.quietest]

    def __getitem__(self, path: str) -> np.ndarray:
        return self.audio[path].copy()

    def text(self, path: str) -> str:
        return self.rows[path]["text"]


@pytest.fixture(scope="session")
def clips(speech_dir) -> Clips:
    return Clips(speech_dir)


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, RATE, rate, quality="HQ").astype(np.float32)


def share_clipped(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x) >= DEFAULT.clip_level))


def gain_clip(x: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(x * gain, -1.0, 1.0)


def loudest_window(x: np.ndarray, size: int) -> np.ndarray:
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(size), mode="valid")
    start = int(np.argmax(energy))
    return x[start:start + size]


def cps(c: Clips, path: str) -> float:
    return written_chars(c.text(path)) / (len(c[path]) / RATE)


# (name, make(clips) -> findings, expected (check, severity, message regex) or None for "no finding")
AUDIO_CASES = [
    # -- silent
    ("digit scaled by 0", lambda c: check_clip(c[DIGIT] * 0, RATE, "zero"),
     (SILENT, QUARANTINE, r"speech level 0\.00e\+00 < 0\.001 \(RMS of its loudest 10% of 20 ms frames; whole clip RMS 0\.00e\+00\)")),
    ("sentence scaled by 1e-3", lambda c: check_clip(c[SENTENCE] * 1e-3, RATE, c.text(SENTENCE)),
     (SILENT, QUARANTINE, r"speech level 1\.\d\de-04 < 0\.001 .*whole clip RMS \d\.\d\de-05")),
    ("quietest real clip, threshold just above its speech level",
     lambda c: check_clip(c[c.quietest], RATE, c.text(c.quietest), HygieneOptions(silent_rms=c.quietest_level * 1.01)),
     (SILENT, QUARANTINE, r"no audible speech")),
    ("quietest real clip, threshold just below its speech level",
     lambda c: check_clip(c[c.quietest], RATE, c.text(c.quietest), HygieneOptions(silent_rms=c.quietest_level * 0.99)), None),
    ("quietest real clip at the default threshold", lambda c: check_clip(c[c.quietest], RATE, c.text(c.quietest)), None),
    # valid quiet speech: a whole-clip RMS under 1e-3, words well above it (Moonshine base transcribes it word for word)
    ("dev-clean clip at -30 dB (whole-clip RMS 7.1e-4)", lambda c: check_clip(c[QUIET] * 10 ** (-30 / 20), RATE, c.text(QUIET)), None),
    ("dev-clean clip at -30 dB, 8 kHz", lambda c: check_clip(resample(c[QUIET], 8000) * 10 ** (-30 / 20), 8000, c.text(QUIET)), None),
    ("dev-clean clip at -30 dB, stereo", lambda c: check_clip(np.stack([c[QUIET] * 10 ** (-30 / 20)] * 2, axis=1), RATE, c.text(QUIET)),
     None),
    ("dev-clean clip at -60 dB", lambda c: check_clip(c[QUIET] * 1e-3, RATE, c.text(QUIET)), (SILENT, QUARANTINE, r"speech level")),
    ("stereo, both channels silenced", lambda c: check_clip(np.stack([c[DIGIT] * 0] * 2, axis=1), RATE, "zero"), (SILENT, QUARANTINE, r"RMS 0")),
    ("stereo, channels in opposite phase (mixed in one polarity: the speech, not silence)",
     lambda c: check_clip(np.stack([c[SENTENCE], -c[SENTENCE]], axis=1), RATE, c.text(SENTENCE)), None),
    ("stereo, one channel dead", lambda c: check_clip(np.stack([c[SENTENCE], c[SENTENCE] * 0], axis=1), RATE, c.text(SENTENCE)), None),
    ("8 kHz real clip silenced", lambda c: check_clip(resample(c[DIGIT], 8000) * 0, 8000, "zero"), (SILENT, QUARANTINE, r"RMS 0")),
    ("silenced clip without a transcript (path list)", lambda c: check_clip(c[DIGIT] * 0, RATE, None), (SILENT, QUARANTINE, r"RMS 0")),
    # -- dc_constant
    ("digit scaled by 0 plus 0.25: constant", lambda c: check_clip(c[DIGIT] * 0 + 0.25, RATE, "zero"),
     (DC_CONSTANT, QUARANTINE, r"constant signal: std 0\.00e\+00 < 0\.001 around a mean of \+0\.250")),
    ("digit scaled by 0 minus 0.5: constant, negative", lambda c: check_clip(c[DIGIT] * 0 - 0.5, RATE, "zero"),
     (DC_CONSTANT, QUARANTINE, r"mean of -0\.500")),
    ("sentence plus DC 0.2", lambda c: check_clip(c[SENTENCE] + 0.2, RATE, c.text(SENTENCE)), (DC_CONSTANT, QUARANTINE, r"DC offset \+0\.200")),
    ("digit minus DC 0.1", lambda c: check_clip(c[DIGIT] - 0.1, RATE, "zero"), (DC_CONSTANT, QUARANTINE, r"DC offset -0\.100.*subtract the mean")),
    ("stereo sentence plus DC 0.2 on both channels",
     lambda c: check_clip(np.stack([c[SENTENCE] + 0.2] * 2, axis=1), RATE, c.text(SENTENCE)), (DC_CONSTANT, QUARANTINE, r"DC offset \+0\.200")),
    ("DC 0.06 on the sentence, |mean| limit just below it",
     lambda c: check_clip(c[SENTENCE] + 0.06, RATE, c.text(SENTENCE), HygieneOptions(max_abs_mean=0.0599, max_mean_to_std=100)),
     (DC_CONSTANT, QUARANTINE, r"limits \|mean\| <= 0\.0599")),
    ("DC 0.06 on the sentence, |mean| limit just above it",
     lambda c: check_clip(c[SENTENCE] + 0.06, RATE, c.text(SENTENCE), HygieneOptions(max_abs_mean=0.0601, max_mean_to_std=100)), None),
    ("DC 0.04 on a quiet sentence: below 0.05 but 2x its std",
     lambda c: check_clip(c[SENTENCE] * 0.2 + 0.04, RATE, c.text(SENTENCE)), (DC_CONSTANT, QUARANTINE, r"DC offset \+0\.040")),
    # -- clipped
    ("sentence at gain 8", lambda c: check_clip(gain_clip(c[SENTENCE], 8), RATE, c.text(SENTENCE)),
     (CLIPPED, WARN, r"\d+\.\d% of samples at \|x\| >= 0\.999 \(> 1%\)")),
    ("digit at gain 60", lambda c: check_clip(gain_clip(c[DIGIT], 60), RATE, "zero"), (CLIPPED, QUARANTINE, r"\(> 20%\).*flat tops")),
    ("sentence at gain 8, warn share just below its share",
     lambda c: check_clip(gain_clip(c[SENTENCE], 8), RATE, c.text(SENTENCE),
                          HygieneOptions(clipped_warn_share=share_clipped(gain_clip(c[SENTENCE], 8)) * 0.99)),
     (CLIPPED, WARN, r"of samples")),
    ("sentence at gain 8, warn share just above its share",
     lambda c: check_clip(gain_clip(c[SENTENCE], 8), RATE, c.text(SENTENCE),
                          HygieneOptions(clipped_warn_share=share_clipped(gain_clip(c[SENTENCE], 8)) * 1.01)), None),
    ("digit at gain 60, quarantine share just above its share: only a warning",
     lambda c: check_clip(gain_clip(c[DIGIT], 60), RATE, "zero",
                          HygieneOptions(clipped_quarantine_share=share_clipped(gain_clip(c[DIGIT], 60)) * 1.01)),
     (CLIPPED, WARN, r"listen to it")),
    ("stereo digit, one channel at gain 60 (the mono mix would hide the flat tops)",
     lambda c: check_clip(np.stack([gain_clip(c[DIGIT], 60), c[DIGIT]], axis=1), RATE, "zero"), (CLIPPED, QUARANTINE, r"\(> 20%\)")),
    ("8 kHz sentence at gain 8", lambda c: check_clip(gain_clip(resample(c[SENTENCE], 8000), 8), 8000, c.text(SENTENCE)),
     (CLIPPED, WARN, r"\(> 1%\)")),
    # -- chars_per_second
    ("digit with a sentence's transcript", lambda c: check_clip(c[DIGIT], RATE, c.text(SENTENCE)),
     (CHARS_PER_SECOND, QUARANTINE, r"\d+ letters/digits in 0\.\d\d s = \d+\.\d/s > 40/s: the transcript is too long")),
    ("sentence with the transcript 'zero'", lambda c: check_clip(c[SENTENCE], RATE, "zero"),
     (CHARS_PER_SECOND, QUARANTINE, r"4 letters/digits in 10\.4\d s = 0\.38/s < 1/s: the transcript is too short")),
    ("digit with an empty transcript", lambda c: check_clip(c[DIGIT], RATE, ""), (CHARS_PER_SECOND, QUARANTINE, r"transcript is empty")),
    ("digit with a whitespace transcript", lambda c: check_clip(c[DIGIT], RATE, " \t "), (CHARS_PER_SECOND, QUARANTINE, r"transcript is empty")),
    ("digit with the transcript '?!'", lambda c: check_clip(c[DIGIT], RATE, "?!"), (CHARS_PER_SECOND, QUARANTINE, r"'\?!' has no letters or digits")),
    ("digit with the transcript '...'", lambda c: check_clip(c[DIGIT], RATE, "..."), (CHARS_PER_SECOND, QUARANTINE, r"has no letters or digits")),
    ("digit with an emoji transcript", lambda c: check_clip(c[DIGIT], RATE, "😀"), (CHARS_PER_SECOND, QUARANTINE, r"has no letters or digits")),
    ("digit with the CJK transcript '零'", lambda c: check_clip(c[DIGIT], RATE, "零"), None),
    ("very short: 0.05 s of the digit, 'zero'", lambda c: check_clip(loudest_window(c[DIGIT], 800), RATE, "zero"),
     (CHARS_PER_SECOND, QUARANTINE, r"4 letters/digits in 0\.05 s = 80\.0/s > 40/s")),
    ("very short 8 kHz: 0.05 s, 'zero'", lambda c: check_clip(loudest_window(resample(c[DIGIT], 8000), 400), 8000, "zero"),
     (CHARS_PER_SECOND, QUARANTINE, r"in 0\.05 s = 80\.0/s")),
    ("8 kHz real digit with its transcript", lambda c: check_clip(resample(c[DIGIT], 8000), 8000, "zero"), None),
    ("44.1 kHz real JFK with its transcript", lambda c: check_clip(resample(c[JFK], 44100), 44100, c.text(JFK)), None),
    ("stereo real sentence with its transcript", lambda c: check_clip(np.stack([c[SENTENCE]] * 2, axis=1), RATE, c.text(SENTENCE)), None),
    ("digit, max chars/s just below its rate",
     lambda c: check_clip(c[DIGIT], RATE, "zero", HygieneOptions(max_chars_per_second=cps(c, DIGIT) * 0.99)),
     (CHARS_PER_SECOND, QUARANTINE, r"too long for the audio")),
    ("digit, max chars/s just above its rate",
     lambda c: check_clip(c[DIGIT], RATE, "zero", HygieneOptions(max_chars_per_second=cps(c, DIGIT) * 1.01)), None),
    ("sentence, min chars/s just above its rate",
     lambda c: check_clip(c[SENTENCE], RATE, c.text(SENTENCE), HygieneOptions(min_chars_per_second=cps(c, SENTENCE) * 1.01)),
     (CHARS_PER_SECOND, QUARANTINE, r"too short for the audio")),
    ("sentence, min chars/s just below its rate",
     lambda c: check_clip(c[SENTENCE], RATE, c.text(SENTENCE), HygieneOptions(min_chars_per_second=cps(c, SENTENCE) * 0.99)), None),
    # -- unusable samples
    ("no samples", lambda c: check_clip(c[DIGIT][:0], RATE, "zero"), (NO_SAMPLES, QUARANTINE, r"0 samples")),
    ("real digit with 3 NaN samples", lambda c: check_clip(_with_nan(c[DIGIT]), RATE, "zero"), (NON_FINITE, QUARANTINE, r"3 of \d+ samples are NaN or inf")),
]


def _with_nan(x: np.ndarray) -> np.ndarray:
    x[[10, 100, 1000]] = np.nan
    return x


@pytest.mark.parametrize("make, expected", [pytest.param(m, e, id=n) for n, m, e in AUDIO_CASES])
def test_clip_checks(clips, make, expected):
    findings = make(clips)
    if expected is None:
        assert findings == []
        return
    check, severity, pattern = expected
    assert [(f.check, f.severity) for f in findings] == [(check, severity)], [f.message for f in findings]
    assert re.search(pattern, findings[0].message), findings[0].message
    assert findings[0].advice


@pytest.mark.parametrize("bad, error", [
    (lambda c: check_clip(c[DIGIT].reshape(1, -1, 1), RATE, "zero"), r"3 dimensions"),
    (lambda c: check_clip(c[DIGIT], 0, "zero"), r"sampling_rate must be positive"),
])
def test_unusable_calls_are_refused(clips, bad, error):
    with pytest.raises(ValueError, match=error):
        bad(clips)


# (name, rows added in order as (id, make audio, text), expected finding of the LAST row or None)
DUPLICATE_CASES = [
    ("same audio, different transcript", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT], "one")],
     (QUARANTINE, r"same audio as a but a different transcript \('one' vs 'zero'\).*contradictory labels")),
    ("same audio, same transcript in other case and punctuation", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT], "Zero.")],
     (WARN, r"same audio and transcript as a.*counts twice")),
    ("same audio, transcript as a numeral", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT], "0")],
     (WARN, r"same audio and transcript as a")),
    ("third copy points at the first id", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT], "zero"),
                                           ("c", lambda c: c[DIGIT], "two")], (QUARANTINE, r"same audio as a ")),
    ("stereo duplicate of a stereo clip", [("a", lambda c: np.stack([c[DIGIT]] * 2, 1), "zero"),
                                           ("b", lambda c: np.stack([c[DIGIT]] * 2, 1), "six")], (QUARANTINE, r"same audio as a")),
    ("another take of the same word by the same speaker", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT_TAKE2], "zero")], None),
    ("the same clip at half the gain (different decoded samples)", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT] * 0.5, "one")], None),
    ("the same clip as float64 (same decoded values)", [("a", lambda c: c[DIGIT], "zero"), ("b", lambda c: c[DIGIT].astype(np.float64), "one")],
     (QUARANTINE, r"different transcript")),
]


@pytest.mark.parametrize("rows, expected", [pytest.param(r, e, id=n) for n, r, e in DUPLICATE_CASES])
def test_duplicate_audio(clips, rows, expected):
    tracker = DuplicateTracker()
    results = [tracker.add(row_id, make(clips), text) for row_id, make, text in rows]
    assert results[0] is None
    last = results[-1]
    if expected is None:
        assert last is None
        return
    severity, pattern = expected
    assert (last.check, last.severity) == (DUPLICATE_AUDIO, severity)
    assert re.search(pattern, last.message), last.message


class LabelDecoding:
    """A CTC tokenizer decoding label ids (no CTC grouping, which would merge the "LL" of "FELLOW")."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, group_tokens=False)


@pytest.fixture(scope="session")
def tokenizers(moonshine_dir, whisper_dir, tmp_path_factory) -> dict:
    from tokenizers import Tokenizer
    from transformers import (
        AutoTokenizer,
        PreTrainedTokenizerFast,
        Wav2Vec2CTCTokenizer,
    )

    spec = json.loads((moonshine_dir / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = False
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "'": 3} | {chr(c): 4 + i for i, c in enumerate(range(ord("A"), ord("Z") + 1))}
    vocab_file = tmp_path_factory.mktemp("ctc") / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    return {
        "moonshine": AutoTokenizer.from_pretrained(moonshine_dir),
        "whisper": AutoTokenizer.from_pretrained(whisper_dir),
        "moonshine-raw": Tokenizer.from_file(str(moonshine_dir / "tokenizer.json")),  # `tokenizers` interface
        "moonshine-no-byte-fallback": PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec))),
        "ctc-letters": LabelDecoding(Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>",
                                                          word_delimiter_token="|")),
    }


TOKENIZER_CASES = [
    ("whisper", "零一二三", None), ("moonshine", "零一二三", None),
    ("whisper", "zero 😀 零", None), ("moonshine", "zero 😀 零", None),
    ("whisper", "naïve café — ¿qué?", None), ("moonshine", "naïve café — ¿qué?", None),
    ("moonshine-raw", "zero 😀 零", None),
    ("ctc-letters", "ZERO", None),
    ("ctc-letters", "Zero", (QUARANTINE, r"cannot write 'ero'.*comes back as 'Z<unk><unk><unk>'")),
    ("ctc-letters", "ZERO.", (WARN, r"cannot write '\.'.*strip them from the training targets")),
    ("ctc-letters", "AND SO, MY FELLOW AMERICANS", (WARN, r"cannot write ','")),
    ("ctc-letters", "ZERO 零", (QUARANTINE, r"cannot write '零'")),
    ("moonshine-no-byte-fallback", "zero 零", (QUARANTINE, r"cannot write '零'.*transliterate")),
    ("moonshine-no-byte-fallback", "zero 😀", (WARN, r"cannot write '😀'")),
]


@pytest.mark.parametrize("name, text, expected", TOKENIZER_CASES, ids=[f"{n}:{t}" for n, t, _ in TOKENIZER_CASES])
def test_unwritable_chars(tokenizers, name, text, expected):
    finding = check_tokenizer(text, tokenizers[name])
    if expected is None:
        assert finding is None
        return
    severity, pattern = expected
    assert (finding.check, finding.severity) == (UNWRITABLE_CHARS, severity)
    assert re.search(pattern, finding.message), finding.message


def test_no_real_transcript_is_unwritable_for_the_real_tokenizers(tokenizers, clips):
    texts = [r["text"] for r in clips.rows.values()]
    for name in ("moonshine", "whisper"):
        assert [t for t in texts if check_tokenizer(t, tokenizers[name])] == []


def test_verify_with_model_flags_the_mislabelled_rows(clips):
    rows = [("digit", clips[DIGIT], "zero"), ("sentence", clips[SENTENCE], clips.text(SENTENCE)), ("jfk", clips[JFK], "zero")]
    heard = {len(clips[DIGIT]): "Zero.", len(clips[SENTENCE]): clips.text(SENTENCE).lower(), len(clips[JFK]): clips.text(JFK)}
    flagged = verify_with_model(rows, lambda batch: [heard[len(x)] for x in batch], batch_size=2)
    assert [row_id for row_id, _ in flagged] == ["jfk"]
    finding = flagged[0][1]
    assert (finding.check, finding.severity) == (MODEL_DISAGREES, WARN)
    assert re.search(r"for 'zero' \(CER \d+\.\d\d > 0\.8\).*likely mislabelled", finding.message)


def test_verify_with_model_refuses_a_short_answer(clips):
    with pytest.raises(ValueError, match="returned 1 texts for 2 clips"):
        verify_with_model([("a", clips[DIGIT], "zero"), ("b", clips[DIGIT], "zero")], lambda batch: ["zero"])


@pytest.mark.slow
def test_verify_with_the_real_moonshine(clips):
    """The imported Moonshine base hears the LibriSpeech sentence; the same clip labelled 'zero' is flagged."""
    import torch

    from lora.model_utils import load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id("moonshine-base-en"))

    def transcribe(batch):
        inputs = family.pad_inputs([family.featurize(processor, x) for x in batch])
        with torch.inference_mode():
            out = model.generate(**inputs, **family.generate_kwargs(max(len(x) for x in batch) / RATE))
        return processor.tokenizer.batch_decode(out, skip_special_tokens=True)

    rows = [("right", clips[SENTENCE], clips.text(SENTENCE)), ("wrong", clips[SENTENCE], "zero")]
    assert [row_id for row_id, _ in verify_with_model(rows, transcribe)] == ["wrong"]


def test_quarantined_rows_become_bad_rows_for_the_quarantine_file(clips, tmp_path):
    from lora.data.hygiene import quarantine_row
    from lora.data.preflight import write_quarantine

    silent = check_clip(clips[DIGIT] * 0, RATE, "")
    row = quarantine_row("manifest.jsonl:7", "9201-1-0000", silent)
    assert (row.reason, row.id) == ("hygiene: silent", "9201-1-0000")
    assert re.search(r"^silent: speech level 0.*; chars_per_second: transcript is empty", row.detail)
    assert quarantine_row("m:1", "x", check_clip(gain_clip(clips[SENTENCE], 8), RATE, clips.text(SENTENCE))) is None  # warn only
    written = json.loads(write_quarantine(tmp_path / "q.jsonl", [row]).read_text().splitlines()[0])
    assert written["reason"] == "hygiene: silent" and written["origin"] == "manifest.jsonl:7"
