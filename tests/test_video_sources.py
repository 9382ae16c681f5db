"""Videos as users have them: the audio of an MP4/MKV read through ffmpeg, a folder of videos read like a folder
of recordings, and a video's own text subtitle stream (MKV SubRip, MP4 mov_text) timing `lora segment` as a
subtitle file beside it would. The audio is real speech of ../shared/speech; only the picture is a test pattern."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from lora.core.audio import SAMPLE_RATE, audio_seconds, load_audio
from lora.core.errors import UserError
from lora.data import subtitles
from lora.data.formats import audio_files_in, manifest_format
from lora.data.long_recordings import chapter_groups, join_utterances
from lora.data.manifest import read_source
from lora.data.subtitles import embedded_subtitles, has_text_subtitles, read_subtitles
from lora.longform import Segment, to_srt

HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
pytestmark = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg/ffprobe not installed (.ci/run installs them)")


def _ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def talk(speech_dir, tmp_path_factory):
    """The 5 first LJSpeech utterances joined (one narrator, ~26 s), as FLAC and as an MP4 video of a test
    pattern with that audio, with the SRT of the utterance bounds."""
    from lora.data.records import read_librispeech_dir

    joined = join_utterances("talk", chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech"]))["9001-1"][:5])
    folder = tmp_path_factory.mktemp("video")
    import soundfile as sf

    sf.write(str(folder / "talk.flac"), joined.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    (folder / "talk.srt").write_text(to_srt([Segment(a, b, u.text.capitalize())
                                             for u, (a, b) in zip(joined.utterances, joined.bounds)]), encoding="utf-8")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-i", folder / "talk.flac", "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-c:a", "aac", "-t", f"{len(joined.samples) / SAMPLE_RATE:.3f}", folder / "talk.mp4")
    return joined, folder


def _with_subtitles(talk, name: str, codec: str, *languages: str):
    """The talk's video with a subtitle stream per language given: the English one (or the only one) its SRT,
    the others words nobody says."""
    joined, folder = talk
    out = folder / name
    other = folder / "other.srt"
    other.write_text(to_srt([Segment(a, b, "Words nobody says here.") for a, b in joined.bounds]), encoding="utf-8")
    inputs, maps, tags = ["-i", folder / "talk.mp4"], ["-map", "0"], []
    for k, language in enumerate(languages):
        inputs += ["-i", folder / "talk.srt" if language == "eng" or len(languages) == 1 else other]
        maps += ["-map", str(k + 1)]
        tags += [f"-metadata:s:s:{k}", f"language={language}"]
    _ffmpeg(*inputs, *maps, "-c", "copy", "-c:s", codec, *tags, out)
    return out


def test_a_videos_audio_is_the_speech_it_carries(talk):
    joined, folder = talk
    got = load_audio(folder / "talk.mp4")
    assert abs(len(got) - len(joined.samples)) <= 0.1 * SAMPLE_RATE
    n = min(len(got), len(joined.samples))
    assert np.corrcoef(got[:n], joined.samples[:n])[0, 1] > 0.9  # AAC, not the same bits: the same speech
    assert audio_seconds(folder / "talk.mp4") == pytest.approx(len(joined.samples) / SAMPLE_RATE, abs=0.2)


def test_videos_are_found_in_a_folder_and_are_no_manifest(talk):
    _, folder = talk
    assert folder / "talk.mp4" in audio_files_in(folder)
    with pytest.raises(UserError, match="talk.mp4: a video, not a manifest"):
        manifest_format(folder / "talk.mp4")


@pytest.mark.parametrize("name, codec", [("talk.mkv", "srt"), ("talk_movtext.mp4", "mov_text")])
def test_a_videos_own_subtitles_read_as_the_srt_they_came_from(talk, name, codec):
    _, folder = talk
    video = _with_subtitles(talk, name, codec, "eng")
    assert has_text_subtitles(video)
    expected = read_subtitles(folder / "talk.srt")
    got = read_subtitles(video)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.start_s for c in got] == pytest.approx([c.start_s for c in expected], abs=0.1)  # container timing


def test_the_english_subtitle_stream_is_chosen_among_several(talk):
    _, folder = talk
    video = _with_subtitles(talk, "two_languages.mkv", "srt", "fre", "eng")  # the English one second
    assert "Words nobody says" not in embedded_subtitles(video)
    assert read_subtitles(video)[0].text == read_subtitles(folder / "talk.srt")[0].text


def test_a_video_without_text_subtitles_says_so(talk, monkeypatch):
    _, folder = talk
    assert not has_text_subtitles(folder / "talk.mp4")
    with pytest.raises(UserError, match=r"talk.mp4: no text subtitle stream in the video \(found: none\)"):
        embedded_subtitles(folder / "talk.mp4")
    (folder / "garbage.mkv").write_bytes(b"not a video at all")
    assert not has_text_subtitles(folder / "garbage.mkv")
    with pytest.raises(UserError, match=r"garbage.mkv: not a video ffprobe can read \(Invalid data found"):
        embedded_subtitles(folder / "garbage.mkv")
    monkeypatch.setattr(subtitles, "subtitle_streams", lambda video: [{"index": 2, "codec_name": "hdmv_pgs_subtitle"}])
    with pytest.raises(UserError, match=r"\(found: hdmv_pgs_subtitle\); pass its subtitles as an .srt/.vtt file "
                                        r"\(image subtitles need OCR first\)"):
        embedded_subtitles(folder / "talk.mp4")
    monkeypatch.setattr(subtitles.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match=r"talk.mp4: reading a video's subtitle stream needs ffmpeg"):
        embedded_subtitles(folder / "talk.mp4")


def test_a_folder_of_videos_reads_their_subtitles_beside_or_inside(talk, tmp_path):
    joined, folder = talk
    (tmp_path / "team").mkdir()
    shutil.copy(_with_subtitles(talk, "inside.mkv", "srt", "eng"), tmp_path / "team" / "inside.mkv")
    shutil.copy(folder / "talk.mp4", tmp_path / "team" / "beside.mp4")
    shutil.copy(folder / "talk.srt", tmp_path / "team" / "beside.srt")
    shutil.copy(folder / "talk.mp4", tmp_path / "team" / "silent_film.mp4")  # nothing says what is spoken
    read = read_source(tmp_path)
    rows = {u.id: u for u in read.rows}
    assert set(rows) == {"team/inside", "team/beside"} and {u.speaker for u in rows.values()} == {"team"}
    assert rows["team/inside"].extra["subtitles"] == str(tmp_path / "team" / "inside.mkv")
    assert rows["team/inside"].text == rows["team/beside"].text == " ".join(u.text.capitalize() for u in joined.utterances)
    assert [b.origin for b in read.bad] == [str(tmp_path / "team" / "silent_film.mp4")]


@pytest.mark.slow
def test_segment_cli_cuts_a_video_at_its_own_subtitles(talk, tmp_path):
    from lora.scripts import segment

    joined, _ = talk
    video = _with_subtitles(talk, "lecture.mkv", "srt", "eng")
    out = tmp_path / "clips" / "lecture.jsonl"
    assert segment.main(["--audio", str(video), "--transcript", f"@{video}", "--output", str(out),
                         "--max-chunk-s", "15", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (out.parent / "quarantine.jsonl").read_text() == ""
    assert " ".join(r["text"] for r in rows).split() == " ".join(u.text.capitalize() for u in joined.utterances).split()
    assert all(r["seconds"] <= 15.0 and (out.parent / r["audio"]).is_file() for r in rows)
