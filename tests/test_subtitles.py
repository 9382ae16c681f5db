"""Subtitles as the transcript of a long recording: SRT/WebVTT read into spoken cues, cues grouped into clips
of at most `max_chunk_s`, clips cut at the cue times (padded into the silence around them), a clip with a cue
it does not say quarantined; end to end on real speech joined from the shared folder."""

from __future__ import annotations

import json
import re

import pytest

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.data.long_recordings import chapter_groups, join_utterances
from lora.data.subtitles import MAX_JOIN_GAP_S, Cue, group_cues, read_subtitles, spoken_text
from lora.longform import LongformOptions
from lora.segmenting import PAD_S, SegmentOptions, segment_by_cues

S = SAMPLE_RATE


def _ts(seconds: float, sep: str = ",") -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def write_srt(path, cues) -> None:
    path.write_text("".join(f"{i}\n{_ts(a)} --> {_ts(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1)),
                    encoding="utf-8")


@pytest.fixture(scope="module")
def ljspeech(speech_dir):
    """The 11 LJSpeech utterances of ../shared/speech joined in order (one speaker, 61 s), with their times."""
    from lora.data.records import read_librispeech_dir

    return join_utterances("9001-1", chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech"]))["9001-1"])


def test_spoken_text_drops_markup_annotations_and_speaker_dashes():
    assert spoken_text("<i>Hello</i> there,\n- general {\\an8}Kenobi.") == "Hello there, general Kenobi."
    assert spoken_text("[MUSIC] \u266a la la \u266a (laughs) You are a bold one.") == "la la You are a bold one."
    assert spoken_text("<v Bob>Well-known</v> - yes") == "Well-known - yes"  # a dash inside a line stays
    assert spoken_text("[APPLAUSE]") == ""


def test_srt_and_vtt_cues_keep_their_milliseconds(tmp_path):
    write_srt(tmp_path / "a.srt", [(0.5, 2.0, "<i>Hello</i> there"), (2.1, 4.25, "[MUSIC]"), (4.3, 6.0, "- Second.")])
    (tmp_path / "a.vtt").write_text("WEBVTT\n\n00:00.500 --> 00:02.000 align:start\n<v Bob>Hello there</v>\n\n"
                                    "00:04.300 --> 00:06.000\nSecond.\n", encoding="utf-8")
    expected = [Cue(0.5, 2.0, "Hello there"), Cue(4.3, 6.0, "Second.")]  # the music-only cue is no speech
    assert read_subtitles(tmp_path / "a.srt") == expected
    assert read_subtitles(tmp_path / "a.vtt") == expected


@pytest.mark.parametrize("content, message", [
    ("not subtitles at all\n", "not a readable SRT subtitle file"),
    ("1\n00:00:02,000 --> 00:00:01,000\nbackwards\n\n", "cue 1 ends at 1.000 s, not after its start 2.000 s"),
    ("1\n00:00:01,000 --> 00:00:02,000\n[MUSIC]\n\n", "no cue holds spoken text"),
])
def test_bad_subtitle_files_are_one_line(tmp_path, content, message):
    (tmp_path / "bad.srt").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_subtitles(tmp_path / "bad.srt")
    (tmp_path / "latin1.srt").write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_subtitles(tmp_path / "latin1.srt")


def test_cues_group_up_to_the_span_and_not_across_a_long_gap():
    cues = [Cue(0, 4, "a"), Cue(4, 9, "b"), Cue(9.5, 12, "c"), Cue(12 + MAX_JOIN_GAP_S + 0.5, 20, "d"), Cue(20, 45, "e")]
    assert [[c.text for c in g] for g in group_cues(cues, 10.0)] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [[c.text for c in g] for g in group_cues(cues, 30.0)] == [["a", "b", "c"], ["d"], ["e"]]


def test_clips_are_cut_at_the_cues_padded_and_a_wrong_cue_quarantines_its_clip(ljspeech, monkeypatch):
    import lora.segmenting

    cues = [Cue(a, b, u.text) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)]
    said = [(a, u.text.lower()) for u, (a, _) in zip(ljspeech.utterances, ljspeech.bounds)]  # what each time holds
    wrong = 4
    cues[wrong] = Cue(cues[wrong].start_s, cues[wrong].end_s, "these words are not what this part of the recording says")
    decoded = []

    def perfect_recogniser(samples, chunks, transcribe_batch, batch_size):  # the utterances each chunk holds
        decoded.extend(chunks)
        return [" ".join(text for t, text in said if a / S <= t < b / S) for a, b in chunks]

    monkeypatch.setattr(lora.segmenting, "decode_chunks", perfect_recogniser)
    options = SegmentOptions(max_cer=0.2, longform=LongformOptions(max_chunk_s=20.0, batch_size=16))
    result = segment_by_cues(ljspeech.samples, cues, transcribe_batch=None, options=options)
    groups = group_cues(cues, 20.0 - 2 * PAD_S)
    every = sorted([*result.clips, *(q.clip for q in result.quarantined)], key=lambda c: c.start_s)
    assert len(every) == len(groups) == len(decoded) and len(groups) < len(cues)  # cues were joined
    for clip, group, (a, b) in zip(every, groups, decoded):
        assert clip.end_s - clip.start_s <= 20.0 and (a, b) == (round(clip.start_s * S), round(clip.end_s * S))
        assert group[0].start_s - PAD_S - 1e-9 <= clip.start_s <= group[0].start_s  # whole cues, padded around them
        assert group[-1].end_s <= clip.end_s <= group[-1].end_s + PAD_S + 1e-9
    assert all(x.end_s <= y.start_s for x, y in zip(every, every[1:]))  # no audio in two clips
    assert [w for c in every for w in c.text.split()] == " ".join(c.text for c in cues).split()
    assert len(result.quarantined) == 1
    reason = re.fullmatch(rf"cue at {cues[wrong].start_s:.2f}-{cues[wrong].end_s:.2f} s not heard \((\d+) of its 11 words "
                          r"missing or different\)", result.quarantined[0].reason)
    assert reason and int(reason[1]) >= 9  # a common word or two may line up by chance
    assert result.clips and all(c.cer == 0.0 for c in result.clips)


def test_a_cue_longer_than_a_clip_is_quarantined_and_not_decoded(ljspeech):
    cues = [Cue(0.0, 5.0, "first"), Cue(5.0, 40.0, "far too long for one clip"), Cue(41.0, 45.0, "last"),
            Cue(80.0, 82.0, "timed after the recording ends")]
    seen = []

    def transcriber(batch):
        seen.extend(len(a) for a in batch)
        return ["x"] * len(batch)

    result = segment_by_cues(ljspeech.samples, cues, transcriber, SegmentOptions(longform=LongformOptions(30.0, batch_size=16)))
    assert len(seen) == 2 and max(seen) <= 30 * S
    assert [q.reason for q in result.quarantined if q.clip.text == "far too long for one clip"] == [
        "cue of 35.0 s > max_chunk_s 30"]
    assert [q.reason for q in result.quarantined if q.clip.text.startswith("timed after")] == [
        f"cue at 80.00 s is past the recording's end ({len(ljspeech.samples) / S:.2f} s)"]


@pytest.mark.slow
def test_segment_cli_cuts_a_real_recording_at_its_subtitles(ljspeech, tmp_path):
    import soundfile as sf

    from lora.scripts import segment

    audio = tmp_path / "talk.flac"
    sf.write(str(audio), ljspeech.samples, S, format="FLAC", subtype="PCM_16")
    cues = [(a, b, u.text.capitalize()) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)]
    cues[2] = (cues[2][0], cues[2][1], "A sentence that nobody says anywhere in this recording at all.")
    write_srt(tmp_path / "talk.srt", cues)
    out = tmp_path / "clips" / "talk.jsonl"
    assert segment.main(["--audio", str(audio), "--transcript", f"@{tmp_path / 'talk.srt'}", "--output", str(out),
                         "--max-chunk-s", "15", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    quarantined = [json.loads(line) for line in (tmp_path / "clips" / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == 1 and "not heard" in quarantined[0]["reason"]
    assert "nobody says" in quarantined[0]["text"]
    assert len(rows) >= 3 and all(r["seconds"] <= 15.0 for r in rows)
    kept = " ".join(r["text"] for r in rows).split()
    assert len(kept) + len(quarantined[0]["text"].split()) == len(" ".join(c[2] for c in cues).split())
    assert all(sf.info(str(out.parent / r["audio"])).duration == pytest.approx(r["seconds"], abs=1e-3) for r in rows)


@pytest.mark.slow
def test_segment_cli_cuts_a_folder_of_recordings_with_transcripts_or_subtitles(speech_dir, tmp_path):
    import soundfile as sf

    from lora.data.records import read_librispeech_dir
    from lora.scripts import segment

    utterances = chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech"]))["9001-1"]
    first, second = join_utterances("a", utterances[:5]), join_utterances("b", utterances[5:])
    folder = tmp_path / "talks" / "narrator"
    folder.mkdir(parents=True)
    sf.write(str(folder / "part1.flac"), first.samples, S, format="FLAC", subtype="PCM_16")
    (folder / "part1.txt").write_text(first.text.capitalize() + "\n")
    sf.write(str(folder / "part2.flac"), second.samples, S, format="FLAC", subtype="PCM_16")
    write_srt(folder / "part2.srt", [(a, b, u.text.capitalize()) for u, (a, b) in zip(second.utterances, second.bounds)])
    out = tmp_path / "clips" / "all.jsonl"
    assert segment.main(["--manifest", str(tmp_path / "talks"), "--output", str(out), "--max-chunk-s", "15", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_recording = {r["id"].rsplit("-", 1)[0] for r in rows}
    assert by_recording == {"narrator/part1", "narrator/part2"} and {r["speaker"] for r in rows} == {"narrator"}
    assert all(r["seconds"] <= 15.0 and (out.parent / r["audio"]).is_file() for r in rows)
    part2 = [r for r in rows if r["id"].startswith("narrator/part2")]
    cue_ends = {round(b, 3) for _, b in second.bounds}
    assert all(min(abs(r["end_s"] - e) for e in cue_ends) <= PAD_S + 1e-3 for r in part2)  # cut at the cues
