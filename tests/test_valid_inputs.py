"""Unusual but valid inputs, built from the real clips of ../shared/speech: they must work, not fail nicely.

Each manifest case writes real clips and a manifest the way some tool or person really writes one (CRLF,
a byte-order mark, accents and spaces in paths, `~`, symlinks, a manifest in another folder, a TSV written
with quotes, an audiofolder's metadata.csv, a name in the other Unicode form) and checks that every row is
read with its exact text and file, and that preflight keeps every row. The audio cases re-encode real clips
(stereo 48/44.1 kHz, 8 kHz, 24-bit, float, FLAC 24-bit, Vorbis, Opus, MP3, WAV with LIST/INFO chunks, upper-case
extensions, -30 dB, clipped) and check the decoded duration and waveform against the original.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora.core.audio import SAMPLE_RATE, audio_seconds, load_audio
from lora.core.cli import run_cli
from lora.data.manifest import read_source
from lora.data.preflight import preflight
from lora.scripts import check

CLIPS = {  # id -> (path under ../shared/speech, speaker)
    "1089-134686-0000": ("test-clean/1089/134686/1089-134686-0000.flac", "1089"),
    "3752-4944-0000": ("dev-clean/3752/4944/3752-4944-0000.flac", "3752"),
    "1988-24833-0000": ("dev-clean/1988/24833/1988-24833-0000.flac", "1988"),
}


def _rows(speech_dir: Path, folder: Path, relative_to: Path | None, name=lambda cid: f"{cid}.flac") -> list[dict]:
    """Copy the clips into `folder` (as `name(id)`); rows with paths relative to `relative_to` (absolute when None)."""
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in (speech_dir / "manifest.jsonl").read_text().splitlines()}
    rows = []
    for cid, (path, speaker) in CLIPS.items():
        target = folder / name(cid)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speech_dir / path, target)
        audio = os.path.relpath(target, relative_to) if relative_to else str(target)
        rows.append({"id": cid, "audio": audio, "text": texts[cid], "speaker": speaker, "file": target})
    return rows


def _jsonl(rows: list[dict], **extra) -> str:
    return "".join(json.dumps({k: v for k, v in r.items() if k != "file"} | extra, ensure_ascii=False) + "\n" for r in rows)


def _table(rows: list[dict], delimiter: str, keys=("id", "audio", "text", "speaker")) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")  # quotes a field holding the delimiter or a quote
    writer.writerows([keys, *([r[k] for k in keys] for r in rows)])
    return out.getvalue()


def crlf_csv(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.csv").write_bytes(_table(rows, ",").replace("\n", "\r\n").encode())
    return tmp / "m.csv", rows


def crlf_tsv(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.tsv").write_bytes(_table(rows, "\t").replace("\n", "\r\n").encode())
    return tmp / "m.tsv", rows


def crlf_jsonl(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.jsonl").write_bytes(_jsonl(rows).replace("\n", "\r\n").encode())
    return tmp / "m.jsonl", rows


def bom_jsonl(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + _jsonl(rows).encode())
    return tmp / "m.jsonl", rows


def bom_tsv(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.tsv").write_bytes(b"\xef\xbb\xbf" + _table(rows, "\t").encode())
    return tmp / "m.tsv", rows


def spaces_and_accents(speech, tmp):
    rows = _rows(speech, tmp, tmp, name=lambda cid: f"my clips/café 日本/clip {cid} é.flac")
    (tmp / "m.csv").write_text(_table(rows, ","), encoding="utf-8")
    return tmp / "m.csv", rows


def decomposed_names(speech, tmp):
    """The manifest spells `café` decomposed (NFD, as macOS writes names); the files are composed (NFC)."""
    rows = _rows(speech, tmp, tmp, name=lambda cid: f"café/{cid}.flac")
    (tmp / "m.jsonl").write_text(_jsonl([r | {"audio": unicodedata.normalize("NFD", r["audio"])} for r in rows]), encoding="utf-8")
    return tmp / "m.jsonl", rows


def absolute_paths(speech, tmp):
    rows = _rows(speech, tmp / "audio", None)
    (tmp / "lists").mkdir()
    (tmp / "lists" / "m.jsonl").write_text(_jsonl(rows))
    return tmp / "lists" / "m.jsonl", rows


def home_paths(speech, tmp, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp / "home"))
    rows = _rows(speech, tmp / "home" / "rec", None)
    rows = [r | {"audio": "~/rec/" + Path(r["audio"]).name} for r in rows]
    (tmp / "m.jsonl").write_text(_jsonl(rows))
    return tmp / "m.jsonl", rows


def symlinked_audio(speech, tmp):
    rows = _rows(speech, tmp / "store", tmp)
    for r in rows:
        (tmp / f"link-{r['id']}.flac").symlink_to(r["file"])
    rows = [r | {"audio": f"link-{r['id']}.flac", "file": tmp / f"link-{r['id']}.flac"} for r in rows]
    (tmp / "m.jsonl").write_text(_jsonl(rows))
    return tmp / "m.jsonl", rows


def manifest_in_another_folder(speech, tmp):
    """`../audio/x.flac`: relative to the manifest's folder, wherever the command runs."""
    rows = _rows(speech, tmp / "audio", tmp / "manifests")
    (tmp / "manifests").mkdir()
    (tmp / "manifests" / "m.tsv").write_text(_table(rows, "\t"))
    return tmp / "manifests" / "m.tsv", rows


def tsv_with_a_quoted_tab(speech, tmp):
    """Python's csv writer (and pandas' to_csv(sep="\\t")) quote a field holding a tab."""
    rows = _rows(speech, tmp, tmp)
    rows[0]["text"] = rows[0]["text"].lower() + ",\tthen"
    (tmp / "m.tsv").write_text(_table(rows, "\t"))
    assert '",\tthen"' not in (tmp / "m.tsv").read_text() and '\tthen"\t' in (tmp / "m.tsv").read_text()
    return tmp / "m.tsv", rows


def extra_fields(speech, tmp):
    rows = _rows(speech, tmp, tmp)
    (tmp / "m.jsonl").write_text(_jsonl(rows, duration=3.3, lang="en", meta={"mic": "usb"}, tags=["a"], score=None))
    return tmp / "m.jsonl", rows


def audiofolder(speech, tmp):
    """A Hugging Face audiofolder: metadata.csv (file_name, transcription) beside the audio; the folder is named."""
    rows = _rows(speech, tmp / "data", tmp / "data", name=lambda cid: f"clips a/{cid}.flac")
    (tmp / "data" / "metadata.csv").write_text(_table([r | {"file_name": r["audio"], "transcription": r["text"]} for r in rows], ",",
                                                      keys=("file_name", "transcription")))
    return tmp / "data", rows


MANIFEST_CASES = [crlf_csv, crlf_tsv, crlf_jsonl, bom_jsonl, bom_tsv, spaces_and_accents, decomposed_names, absolute_paths,
                  home_paths, symlinked_audio, manifest_in_another_folder, tsv_with_a_quoted_tab, extra_fields, audiofolder]


@pytest.mark.parametrize("make", MANIFEST_CASES, ids=lambda f: f.__name__)
def test_valid_manifest_reads_every_row_exactly(make, speech_dir, tmp_path, monkeypatch):
    args = (speech_dir, tmp_path, monkeypatch) if make is home_paths else (speech_dir, tmp_path)
    source, rows = make(*args)
    read = read_source(source)
    assert read.bad == ()
    assert [(u.text, os.path.realpath(u.audio)) for u in read.rows] == [(r["text"], os.path.realpath(r["file"])) for r in rows]
    report = preflight(list(read.rows), read.bad, require_text=True, quiet=True)
    assert len(report.good) == len(rows), [b.message for b in report.bad]
    seconds = sum(sf.info(str(r["file"])).duration for r in rows)
    assert sum(u.extra["seconds"] for u in report.good) == pytest.approx(seconds, abs=1e-3)


# --------------------------------------------------------------------------------------------------------------
# audio: re-encodings of one real clip, each read to the original's length and waveform

SENTENCE = "dev-clean/3752/4944/3752-4944-0000.flac"  # 3.335 s


def _ffmpeg(src: Path, out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(src), *args, str(out)], check=True)
    return out


def _sf(x: np.ndarray, out: Path, rate: int, **kwargs) -> Path:
    sf.write(str(out), x, rate, **kwargs)
    return out


def _up(x: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, SAMPLE_RATE, rate, quality="VHQ")


# (name, write(x, wav16k, folder) -> path, min correlation with the original after decoding)
AUDIO_CASES = [
    ("stereo 48 kHz WAV", lambda x, w, d: _sf(np.stack([_up(x, 48000)] * 2, axis=1), d / "a.wav", 48000, subtype="PCM_16"), 0.999),
    ("stereo 44.1 kHz WAV", lambda x, w, d: _sf(np.stack([_up(x, 44100)] * 2, axis=1), d / "a.wav", 44100, subtype="PCM_16"), 0.999),
    ("8 kHz WAV", lambda x, w, d: _sf(_up(x, 8000), d / "a.wav", 8000, subtype="PCM_16"), 0.98),
    ("24-bit WAV", lambda x, w, d: _sf(x, d / "a.wav", SAMPLE_RATE, subtype="PCM_24"), 0.9999),
    ("32-bit float WAV", lambda x, w, d: _sf(x, d / "a.wav", SAMPLE_RATE, subtype="FLOAT"), 0.9999),
    ("24-bit 48 kHz FLAC", lambda x, w, d: _sf(_up(x, 48000), d / "a.flac", 48000, subtype="PCM_24"), 0.999),
    ("upper-case .WAV", lambda x, w, d: _sf(x, d / "A.WAV", SAMPLE_RATE, subtype="PCM_16"), 0.9999),
    ("upper-case .FLAC", lambda x, w, d: _sf(x, d / "A.FLAC", SAMPLE_RATE, subtype="PCM_16"), 0.9999),
    ("WAVE_FORMAT_EXTENSIBLE stereo", lambda x, w, d: _sf(np.stack([x] * 2, axis=1), d / "a.wav", SAMPLE_RATE, format="WAVEX"), 0.9999),
    ("WAV with LIST/INFO metadata", lambda x, w, d: _ffmpeg(w, d / "a.wav", "-metadata", "title=take 1", "-metadata", "artist=me",
                                                             "-c:a", "pcm_s16le"), 0.9999),
    ("broadcast WAV (bext chunk), 24-bit 48 kHz", lambda x, w, d: _ffmpeg(w, d / "a.wav", "-write_bext", "1", "-c:a", "pcm_s24le",
                                                                           "-ar", "48000"), 0.999),
    ("OGG Vorbis", lambda x, w, d: _ffmpeg(w, d / "a.ogg", "-c:a", "libvorbis", "-q:a", "5"), 0.99),
    ("Opus (.opus)", lambda x, w, d: _ffmpeg(w, d / "a.opus", "-c:a", "libopus", "-b:a", "48k"), 0.99),
    ("Opus in .ogg", lambda x, w, d: _ffmpeg(w, d / "a.ogg", "-c:a", "libopus", "-b:a", "48k"), 0.99),
    ("MP3 CBR 128k", lambda x, w, d: _ffmpeg(w, d / "a.mp3", "-c:a", "libmp3lame", "-b:a", "128k"), 0.99),
]


@pytest.fixture(scope="module")
def sentence(speech_dir, tmp_path_factory):
    x, rate = sf.read(str(speech_dir / SENTENCE), dtype="float64")
    assert rate == SAMPLE_RATE
    folder = tmp_path_factory.mktemp("sentence")
    return x, _sf(x, folder / "orig.wav", SAMPLE_RATE, subtype="PCM_16")


@pytest.mark.parametrize("write, min_corr", [pytest.param(w, c, id=n) for n, w, c in AUDIO_CASES])
def test_audio_format_decodes_to_the_original(write, min_corr, sentence, tmp_path):
    if shutil.which("ffmpeg") is None and "_ffmpeg" in write.__code__.co_names:
        pytest.skip("ffmpeg not installed: the encoder of this case")
    x, wav = sentence
    path = write(x, wav, tmp_path)
    decoded = load_audio(path)
    assert len(decoded) == len(x) and audio_seconds(path) == pytest.approx(len(x) / SAMPLE_RATE, abs=1e-3)
    assert np.corrcoef(decoded, x)[0, 1] >= min_corr


def test_stereo_with_one_channel_inverted_decodes_to_the_speech_not_to_silence(sentence, tmp_path):
    """A stereo recording whose right channel is the left inverted (one input wired in opposite polarity) held
    real speech in both channels, yet the plain mean of the channels cancelled it to zeros and preflight
    quarantined it as "silent". It decodes to the clip itself; a channel that is silent, or in phase, still
    mixes as the plain mean."""
    x, _ = sentence
    inverted = _sf(np.stack([x, -x], axis=1), tmp_path / "inverted.wav", SAMPLE_RATE, subtype="PCM_16")
    decoded = load_audio(inverted)
    assert np.corrcoef(decoded, x)[0, 1] >= 0.9999
    assert float(np.sqrt(np.mean(decoded ** 2))) == pytest.approx(float(np.sqrt(np.mean(x ** 2))), rel=1e-3)
    report = preflight(read_source(_listing(tmp_path, inverted)).rows, quiet=True)
    assert len(report.good) == 1 and not report.bad
    left_only = _sf(np.stack([x, 0 * x], axis=1), tmp_path / "left.wav", SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(left_only), sf.read(str(left_only), dtype="float32")[0].mean(axis=1))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed: the decoder of M4A and WebM")
@pytest.mark.parametrize("container, codec", [("m4a", "aac"), ("webm", "libopus")])
def test_an_inverted_stereo_pair_read_through_ffmpeg_is_the_speech_not_silence(container, codec, sentence, tmp_path):
    """The same inverted pair as a phone's M4A or a browser's WebM, which only ffmpeg reads: ffmpeg's own mix to
    mono (`-ac 1`) cancelled it (peak 0.005 for a clip peaking at 0.65). Every channel is now read back and
    mixed by `downmix`, as a file libsndfile reads is; an ordinary stereo file still mixes as the mean."""
    x, wav = sentence
    pair = _sf(np.stack([x, -x], axis=1), tmp_path / "pair.wav", SAMPLE_RATE, subtype="PCM_16")
    encoded = _ffmpeg(pair, tmp_path / f"pair.{container}", "-c:a", codec, "-b:a", "128k")
    decoded = load_audio(encoded)
    n = min(len(decoded), len(x))
    assert abs(len(decoded) - len(x)) <= 0.1 * SAMPLE_RATE  # the codec pads to whole frames (AAC: 1,024 samples)
    # the mix follows the louder channel, which the codec's rounding chooses: either polarity is the speech
    lag = int(np.argmax(np.abs(np.correlate(decoded[:n], x[:n], "full")))) - (n - 1)  # priming: align first
    aligned = decoded[max(lag, 0):n + min(lag, 0)], x[max(-lag, 0):n - max(lag, 0)]
    assert abs(np.corrcoef(*aligned)[0, 1]) >= 0.99
    assert float(np.abs(decoded).max()) == pytest.approx(float(np.abs(x).max()), rel=0.1)
    in_phase = _ffmpeg(wav, tmp_path / f"mono.{container}", "-ac", "2", "-c:a", codec, "-b:a", "128k")
    assert abs(np.corrcoef(load_audio(in_phase)[:n], decoded[:n])[0, 1]) >= 0.99


def test_check_keeps_quiet_loud_and_reencoded_real_speech_in_a_folder(sentence, speech_dir, tmp_path, capsys):
    """A folder of recordings with same-name transcripts, names with spaces and upper-case extensions: every one is
    kept. The -30 dB copy of dev-clean 1988-24833-0000 has a whole-clip RMS of 7.1e-4 (it was quarantined as
    "silent" by that RMS) and Moonshine base reads it word for word."""
    x, _ = sentence
    quiet, _ = sf.read(str(speech_dir / "dev-clean/1988/24833/1988-24833-0000.flac"), dtype="float64")
    files = {
        "alice/take one.WAV": (x, "CAPTAIN FRERE SAYS THAT THE SCENERY IS DELIGHTFUL"),
        "alice/take two loud.flac": (np.clip(x * 4, -1, 1), "CAPTAIN FRERE SAYS THAT THE SCENERY IS DELIGHTFUL"),
        "bob/quiet take.wav": (quiet * 10 ** (-30 / 20), "THE TWO STRAY KITTENS GRADUALLY MAKE THEMSELVES AT HOME"),
    }
    for name, (samples, text) in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(tmp_path / name), samples, SAMPLE_RATE, subtype="PCM_16")
        (tmp_path / name).with_suffix(".txt").write_text(text + "\n")
    assert run_cli(check.main, [str(tmp_path), "--output", str(tmp_path / "checked")]) == 0
    out = capsys.readouterr().out
    assert "3 read, 3 good, 0 bad" in out
    assert "hygiene: clipped" in out  # a warning, the row kept


def test_float_audio_over_full_scale_is_brought_to_full_scale_not_called_clipped(sentence, tmp_path):
    """A 32-bit float WAV of real speech 40x too loud (peak ~20: float encodings may exceed 1.0) holds an intact
    waveform: it decodes to the original scaled to full scale, and preflight keeps it. It was quarantined as
    "mostly flat tops" (every sample above 0.999 counted as clipped). 16-bit PCM at full scale is untouched."""
    x, wav = sentence
    loud = _sf(x * 40, tmp_path / "loud.wav", SAMPLE_RATE, subtype="FLOAT")
    decoded = load_audio(loud)
    assert float(np.max(np.abs(decoded))) == pytest.approx(1.0)
    np.testing.assert_allclose(decoded, x / np.max(np.abs(x)), atol=1e-6)
    report = preflight(read_source(_listing(tmp_path, loud)).rows, quiet=True)
    assert len(report.good) == 1 and not report.bad and not report.warnings
    np.testing.assert_array_equal(load_audio(wav), sf.read(str(wav), dtype="float32")[0])  # within full scale: as read


def _listing(folder: Path, *paths: Path) -> Path:
    listing = folder / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return listing
