"""Containers libsndfile does not read (M4A/AAC from phones, WebM): decoded through ffmpeg when it is
installed, refused in one line with what to do when it is not. Every clip is a real recording re-encoded."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from lora.core import audio as core_audio
from lora.core.audio import FFMPEG_HINT, AudioDecodeError, FfmpegMissing, Span, audio_seconds, load_audio
from lora.data.audio_probe import (
    NEEDS_FFMPEG,
    PROBER_VERSION,
    TRUNCATED,
    UNDECODABLE,
    mp3_has_length_tag,
    probe_audio,
    shortfall,
)
from lora.data.preflight import preflight
from lora.data.probe_cache import ProbeCache, file_key
from lora.data.records import Utterance

HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg/ffprobe not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def real_clip(speech_dir):
    return sorted((speech_dir / "jfk").rglob("*.flac"))[0]


def _encode(source, out, *codec):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *codec, str(out)], check=True)
    return out


@pytest.fixture
def m4a(real_clip, tmp_path):
    if not HAS_FFMPEG:
        pytest.skip("ffmpeg not installed")
    # ffmpeg's own AAC writer puts the index (moov atom) at the end: unreadable from a pipe
    return _encode(real_clip, tmp_path / "phone memo.m4a", "-c:a", "aac")


@pytest.fixture
def no_ffmpeg(monkeypatch):
    monkeypatch.setattr(core_audio.shutil, "which", lambda name: None)


@needs_ffmpeg
def test_m4a_decodes_to_the_same_speech_as_the_flac(real_clip, m4a):
    flac = load_audio(real_clip)
    got = load_audio(m4a)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(flac)) <= 0.05 * core_audio.SAMPLE_RATE
    n = min(len(got), len(flac))
    assert np.corrcoef(got[:n], flac[:n])[0, 1] > 0.95  # lossy, but the same samples in the same place
    assert audio_seconds(m4a) == pytest.approx(len(flac) / core_audio.SAMPLE_RATE, abs=0.05)


@needs_ffmpeg
def test_encoded_bytes_of_an_m4a_decode_too(m4a):
    assert np.array_equal(load_audio(m4a.read_bytes()), load_audio(m4a))
    assert audio_seconds(m4a.read_bytes()) == pytest.approx(audio_seconds(m4a))


@needs_ffmpeg
def test_webm_opus_decodes(real_clip, tmp_path):
    webm = _encode(real_clip, tmp_path / "call.webm", "-c:a", "libopus")
    assert probe_audio(str(webm), 16_000, 0.1, 30.0).ok
    assert len(load_audio(webm)) == pytest.approx(len(load_audio(real_clip)), abs=800)


@needs_ffmpeg
def test_probe_of_an_m4a_header_only_and_decoded(m4a):
    header = probe_audio(str(m4a), 16_000, 0.1, 30.0, decode=False)
    decoded = probe_audio(str(m4a), 16_000, 0.1, 30.0)
    assert header.ok and decoded.ok
    assert decoded.seconds == pytest.approx(header.seconds, abs=0.05)
    too_long = probe_audio(str(m4a), 16_000, 0.1, 5.0, decode=False)
    assert too_long.reason == "too long"


@needs_ffmpeg
def test_text_named_m4a_is_undecodable_with_ffmpegs_words(tmp_path):
    fake = tmp_path / "notes.m4a"
    fake.write_text("not audio at all\n" * 20)
    probe = probe_audio(str(fake), 16_000, 0.1, 30.0)
    assert probe.reason == UNDECODABLE
    assert probe.detail == "Format not recognised; nor can ffprobe: Invalid data found when processing input"
    with pytest.raises(AudioDecodeError, match="^Format not recognised; nor can ffmpeg: "):
        load_audio(fake)


@needs_ffmpeg
def test_a_video_without_an_audio_stream_says_so(tmp_path):
    video = tmp_path / "screen.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1",
                    "-c:v", "mpeg4", str(video)], check=True)
    assert probe_audio(str(video), 16_000, 0.1, 30.0).detail == "no audio stream in the file"


def test_without_ffmpeg_an_m4a_is_refused_with_what_to_do(tmp_path, no_ffmpeg):
    fake_m4a = tmp_path / "memo.m4a"
    fake_m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 400)  # the container's magic, nothing libsndfile reads
    with pytest.raises(FfmpegMissing, match="install ffmpeg"):
        load_audio(fake_m4a)
    probe = probe_audio(str(fake_m4a), 16_000, 0.1, 30.0)
    assert probe.reason == NEEDS_FFMPEG and FFMPEG_HINT in probe.detail


def test_needs_ffmpeg_is_not_cached(tmp_path, no_ffmpeg, monkeypatch):
    monkeypatch.setenv("LORA_PREFLIGHT_CACHE", str(tmp_path / "cache.sqlite"))
    memo = tmp_path / "memo.m4a"
    memo.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 400)
    rows = [Utterance(id="memo", speaker="s", text="hello", audio=str(memo), origin="m.jsonl:1")]
    report = preflight(rows, min_good=0, quiet=True)
    assert [b.reason for b in report.bad] == [NEEDS_FFMPEG]
    cache = ProbeCache()
    assert cache.db.execute(f"SELECT COUNT(*) FROM probes_v{PROBER_VERSION}").fetchone()[0] == 0


@needs_ffmpeg
def test_a_cached_good_m4a_on_a_machine_without_ffmpeg_is_quarantined_not_a_traceback(m4a, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_PREFLIGHT_CACHE", str(tmp_path / "cache.sqlite"))
    rows = lambda: [Utterance(id="memo", speaker="s", text="and so my fellow americans", audio=str(m4a),  # noqa: E731
                              origin="m.jsonl:1")]
    assert len(preflight(rows(), quiet=True).good) == 1  # probed with ffmpeg, cached as good
    monkeypatch.setattr(core_audio.shutil, "which", lambda name: None)
    report = preflight(rows(), min_good=0, quiet=True)  # the cache says good; the decode cannot happen here
    assert report.good == () and [b.reason for b in report.bad] == [NEEDS_FFMPEG]
    assert "install ffmpeg" in report.bad[0].detail


def test_answers_of_an_older_prober_are_not_read_back(tmp_path, real_clip):
    path = tmp_path / "cache.sqlite"
    key = file_key(real_clip)
    cache = ProbeCache(path)
    cache.db.execute("CREATE TABLE probes (path TEXT, size INTEGER, mtime_ns INTEGER, decoded INTEGER, min_s REAL, "
                     "max_s REAL, seconds REAL, reason TEXT, detail TEXT)")
    cache.db.execute("INSERT INTO probes VALUES (?,?,?,?,?,?,?,?,?)", (*key, 1, 0.1, 30.0, 0.0, "cannot decode", "old"))
    cache.db.commit()
    assert cache.get_many([key], True, 0.1, 30.0) == {}


@pytest.fixture
def cut_m4a(m4a, tmp_path):
    """An M4A with its index first (as phones write them), cut in half: the header still says the full length."""
    whole = tmp_path / "indexed.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(m4a), "-c", "copy", "-movflags",
                    "+faststart", str(whole)], check=True)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


@needs_ffmpeg
def test_a_cut_m4a_is_truncated_not_half_a_clip(cut_m4a):
    assert probe_audio(str(cut_m4a), 16_000, 0.1, 30.0, decode=False).ok  # the header alone cannot tell
    probe = probe_audio(str(cut_m4a), 16_000, 0.1, 30.0)
    assert probe.reason == TRUNCATED and probe.detail.startswith("decoded ")


@needs_ffmpeg
def test_loader_workers_quarantine_a_cut_file_that_passed_the_header_check(cut_m4a):
    from lora.data.preflight import header_check
    from lora.data_loader import ClipDataset, ClipTable

    rows = [Utterance(id="cut", speaker="s", text="and so my fellow americans ask not", audio=str(cut_m4a),
                      origin="m.jsonl:1")]
    table = ClipTable.from_records(list(header_check(rows, quiet=True, cache=False).good))
    loaded = ClipDataset(table, processor=None, family=None)[0]  # refused before the processor is needed
    assert loaded.problem[0] == TRUNCATED and "its header declares" in loaded.problem[1]


def test_shortfall_tolerates_a_header_estimate_but_not_a_cut():
    assert shortfall(10.9, 11.0) is None and shortfall(9.95, 11.0) is None  # within 10% (+0.1 s)
    assert shortfall(5.6, 11.0) == "decoded 5.60 s of the 11.00 s its header declares"


@needs_ffmpeg
def test_stt_transcribes_an_m4a_named_without_a_flag(m4a, tiny_moonshine, tmp_path):
    from lora.scripts import run_stt

    out = tmp_path / "stt.json"
    assert run_stt.main([str(m4a), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    artifact = json.loads(out.read_text())
    assert artifact["errors"] == [] and [s["id"] for s in artifact["samples"]] == ["phone memo"]
    assert artifact["samples"][0]["seconds"] == pytest.approx(audio_seconds(m4a), abs=0.05)


def test_stt_without_ffmpeg_lists_the_m4a_with_its_reason_and_transcribes_the_rest(real_clip, tiny_moonshine, tmp_path,
                                                                                  no_ffmpeg):
    from lora.scripts import run_stt

    memo = tmp_path / "memo.m4a"
    memo.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 400)
    out = tmp_path / "stt.json"
    assert run_stt.main([str(memo), str(real_clip), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    artifact = json.loads(out.read_text())
    assert len(artifact["samples"]) == 1
    assert [(e["id"], e["reason"]) for e in artifact["errors"]] == [("memo", NEEDS_FFMPEG)]
    assert "ffmpeg -i IN -ar 16000 OUT.flac" in artifact["errors"][0]["detail"]


@pytest.fixture
def vbr_mp3s(real_clip, tmp_path):
    """The same real clip as VBR MP3 with its length tag (Xing), without one, and cut in half."""
    if not HAS_FFMPEG:
        pytest.skip("ffmpeg not installed")
    tagged = _encode(real_clip, tmp_path / "tagged.mp3", "-c:a", "libmp3lame", "-q:a", "6")
    untagged = _encode(real_clip, tmp_path / "untagged.mp3", "-c:a", "libmp3lame", "-q:a", "6", "-write_xing", "0")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(tagged.read_bytes()[: tagged.stat().st_size * 3 // 4])
    return tagged, untagged, cut


@needs_ffmpeg
def test_an_mp3_without_a_length_tag_is_measured_by_its_decode(vbr_mp3s, real_clip):
    import soundfile as sf

    tagged, untagged, cut = vbr_mp3s
    seconds = len(load_audio(real_clip)) / core_audio.SAMPLE_RATE
    assert mp3_has_length_tag(str(tagged)) and mp3_has_length_tag(tagged.read_bytes())
    assert not mp3_has_length_tag(str(untagged))
    assert sf.info(str(untagged)).duration > 2 * seconds  # libsndfile's guess from the file size
    for decode in (True, False):
        assert probe_audio(str(untagged), 16_000, 0.1, 30.0, decode=decode).seconds == pytest.approx(seconds, abs=0.1)
        assert probe_audio(str(tagged), 16_000, 0.1, 30.0, decode=decode).seconds == pytest.approx(seconds, abs=0.1)
    assert probe_audio(str(cut), 16_000, 0.1, 30.0).reason == TRUNCATED  # a tagged file cut short still is one


def test_doctor_says_which_audio_formats_this_machine_reads(monkeypatch):
    from lora.scripts import doctor

    key, value = doctor.audio_formats_row()
    assert key == "audio formats" and "FLAC" in value and "WAV" in value
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor.audio_formats_row()[1].endswith("no ffmpeg: M4A/AAC/WebM and video rows are refused (apt-get install ffmpeg)")



@needs_ffmpeg
def test_a_segment_of_an_m4a_is_its_slice_of_the_whole_decode(m4a, tmp_path):
    """ffmpeg decodes the whole file and the segment is cut from it, to the sample; preflight measures the segment."""
    whole = load_audio(m4a)
    assert np.array_equal(load_audio(m4a, Span(2.5, 4.0)), whole[40_000:64_000])
    assert np.array_equal(load_audio(m4a, Span(9.0)), whole[144_000:])
    report = preflight([Utterance("memo@2.5-4", "s", "ask not", m4a, origin="m:1", span=Span(2.5, 4.0))], quiet=True, cache=False)
    assert report.good[0].extra["seconds"] == pytest.approx(1.5)
