"""Subtitles as the transcript of a long recording: SRT/WebVTT read into spoken cues, cues grouped into clips
of at most `max_chunk_s`, clips cut at the cue times (padded into the silence around them), a clip with a cue
it does not say quarantined; end to end on real speech joined from the shared folder."""

from __future__ import annotations

import json
import logging
import re

import pytest

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.data.long_recordings import chapter_groups, join_utterances
from lora.data.records import Utterance
from lora.data.subtitles import MAX_JOIN_GAP_S, Cue, group_cues, read_subtitles, shift_cues, spoken_text
from lora.longform import LongformOptions, Segment, subtitle_timestamp, to_srt
from lora.segmenting import MIN_OFFSET_S, OFFSET_FRAME_S, PAD_S, SegmentOptions, best_offset, segment_by_cues, subtitle_offset
from recipe_scripts import load_recipe

S = SAMPLE_RATE


caption_files = load_recipe("caption_files")


def write_srt(path, cues) -> None:
    path.write_text(to_srt([Segment(a, b, text) for a, b, text in cues]), encoding="utf-8")


def write_rolling_vtt(path, cues) -> None:
    path.write_text(caption_files.rolling_vtt(cues), encoding="utf-8")


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
    assert spoken_text("&gt;&gt; so what do you think") == "so what do you think"  # YouTube's speaker change
    assert spoken_text("AT&amp;T and&nbsp;Johnson &lt;i&gt;x") == "AT&T and Johnson <i>x"  # escaped, not markup


def test_srt_and_vtt_cues_keep_their_milliseconds(tmp_path):
    write_srt(tmp_path / "a.srt", [(0.5, 2.0, "<i>Hello</i> there"), (2.1, 4.25, "[MUSIC]"), (4.3, 6.0, "- Second.")])
    (tmp_path / "a.vtt").write_text("WEBVTT\n\n00:00.500 --> 00:02.000 align:start\n<v Bob>Hello there</v>\n\n"
                                    "00:04.300 --> 00:06.000\nSecond.\n", encoding="utf-8")
    expected = [Cue(0.5, 2.0, "Hello there"), Cue(4.3, 6.0, "Second.")]  # the music-only cue is no speech
    assert read_subtitles(tmp_path / "a.srt") == expected
    assert read_subtitles(tmp_path / "a.vtt") == [Cue(0.5, 2.0, "Hello there", speaker="Bob"), expected[1]]


@pytest.mark.parametrize("content, message", [
    ("not subtitles at all\n", "not a readable SRT subtitle file"),
    ("1\n00:00:02,000 --> 00:00:01,000\nbackwards\n\n", "bad.srt:2: cue 1 ends at 1.000 s, not after its start 2.000 s"),
    ("1\n00:00:01,000 --> 00:00:02,000\n[MUSIC]\n\n", "no cue holds spoken text"),
    ("\n \n", "bad.srt: empty; pass the recording's subtitles"),
    # a time without hours (or a cue without its number) was skipped by the reader, its words silently lost
    ("1\n00:00:01,000 --> 00:00:02,000\nHello.\n\n2\n00:03,000 --> 00:04,000\nthese words\n\n",
     r"bad.srt:6: cue time line '00:03,000 --> 00:04,000' cannot be read \(1 of 2 cues would be lost\); write it as "
     "HH:MM:SS,mmm --> HH:MM:SS,mmm"),
    ("1\n00:00:01,000 --> 00:00:02,000\nHello.\n\n00:00:03,000 --> 00:00:04,000\nno number\n\n", r"bad.srt:5: cue time line"),
])
def test_bad_subtitle_files_are_one_line(tmp_path, content, message):
    (tmp_path / "bad.srt").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_subtitles(tmp_path / "bad.srt")
    (tmp_path / "latin1.srt").write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.srt:3: not UTF-8 \(byte 0xe9\); re-save the subtitles as UTF-8 "
                                        r"\(from Windows-1252: iconv -f cp1252 -t utf-8 "):
        read_subtitles(tmp_path / "latin1.srt")


def test_a_webvtt_or_sbv_cue_time_the_reader_skips_names_its_line(tmp_path):
    (tmp_path / "a.vtt").write_text("WEBVTT\n\nNOTE a comment\n\n00:00:01.000 --> 00:00:02.000 align:start\nHello.\n\n"
                                    "00:00:03,000 --> 00:00:04,000\nA comma.\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"a.vtt:8: cue time line '00:00:03,000 --> 00:00:04,000' cannot be read "
                                        r"\(1 of 2 cues would be lost\); write it as HH:MM:SS.mmm --> HH:MM:SS.mmm$"):
        read_subtitles(tmp_path / "a.vtt")
    (tmp_path / "a.sbv").write_text("0:00:01.000,0:00:02.500\nHello there.\n\n0:00:03.00,0:00:04.000\nAgain.\n")
    with pytest.raises(UserError, match=r"a.sbv:4: cue time line '0:00:03.00,0:00:04.000' cannot be read"):
        read_subtitles(tmp_path / "a.sbv")


def test_a_byte_order_mark_and_youtube_sbv_are_read(tmp_path):
    (tmp_path / "bom.srt").write_bytes(b"\xef\xbb\xbf1\r\n00:00:01,000 --> 00:00:02,500\r\nHello there.\r\n\r\n")
    (tmp_path / "a.sbv").write_text("0:00:01.000,0:00:02.500\nHello there.\n\n0:00:03.000,0:00:04.000\nAgain.\n")
    assert read_subtitles(tmp_path / "bom.srt") == [Cue(1.0, 2.5, "Hello there.")]
    assert read_subtitles(tmp_path / "a.sbv") == [Cue(1.0, 2.5, "Hello there."), Cue(3.0, 4.0, "Again.")]


def test_rolling_captions_keep_each_line_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lora")
    said = [(0.0, 2.35, "hello everyone welcome"), (2.36, 5.0, "to the show"), (5.01, 7.0, "today we talk")]
    write_rolling_vtt(tmp_path / "auto.vtt", said)
    cues = read_subtitles(tmp_path / "auto.vtt")
    assert [c.text for c in cues] == [t for _, _, t in said]  # read as written, words came two or three times
    assert [(c.start_s, c.end_s) for c in cues] == [(a, round(b - 0.01, 3)) for a, b, _ in said]
    assert read_subtitles(tmp_path / "auto.vtt") == cues
    assert caplog.text.count("auto.vtt: rolling captions (each cue repeats the line before it): each line read once") == 1
    # broadcast roll-up of three lines, as SRT: each cue the last two lines of the one before and a new one
    write_srt(tmp_path / "rollup.srt", [(0, 2, "One."), (2, 4, "One.\nTwo."), (4, 6, "One.\nTwo.\nThree."),
                                        (6, 8, "two.\nThree.\nFour.")])
    assert [c.text for c in read_subtitles(tmp_path / "rollup.srt")] == ["One.", "Two.", "Three.", "Four."]


def test_a_line_said_again_in_ordinary_subtitles_is_kept(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lora")
    write_srt(tmp_path / "a.srt", [(0, 1, "No."), (1.5, 2.5, "No.\nI said no."), (3, 4, "Fine."), (4.5, 5, "Really?")])
    assert [c.text for c in read_subtitles(tmp_path / "a.srt")] == ["No.", "No. I said no.", "Fine.", "Really?"]
    assert "rolling" not in caplog.text


def test_who_speaks_comes_from_voice_tags_and_name_labels(tmp_path):
    (tmp_path / "teams.vtt").write_text("WEBVTT\n\n00:00.500 --> 00:02.000\n<v Alice Smith>Hello there.</v>\n\n"
                                        "00:02.500 --> 00:04.000\n<v.loud Bob>Hi.</v>\n\n"
                                        "00:04.500 --> 00:06.000\n<v Alice Smith>One.</v> <v Bob>Two.</v>\n\n"
                                        "00:06.500 --> 00:07.000\nNobody named.\n", encoding="utf-8")
    assert [(c.text, c.speaker) for c in read_subtitles(tmp_path / "teams.vtt")] == [
        ("Hello there.", "Alice Smith"), ("Hi.", "Bob"), ("One. Two.", ""), ("Nobody named.", "")]
    write_srt(tmp_path / "zoom.srt", [(0, 2, "Alice Smith: Hello everyone."), (2, 4, "Speaker 2: Hi Alice."),
                                      (4, 6, "Alice Smith: Note: this is said."), (6, 8, "and this goes on")])
    assert [(c.text, c.speaker) for c in read_subtitles(tmp_path / "zoom.srt")] == [
        ("Hello everyone.", "Alice Smith"), ("Hi Alice.", "Speaker 2"), ("Note: this is said.", "Alice Smith"),
        ("and this goes on", "")]
    # labels on few cues: only a name in capitals before words that are not is a label
    said = ["JOHN: Where are you?", "Note: this is said.", "Fine.", "Really.", "STOP: THE SIGN SAYS", "Okay.", "Sure."]
    write_srt(tmp_path / "sdh.srt", [(2 * k, 2 * k + 1, text) for k, text in enumerate(said)])
    assert [(c.text, c.speaker) for c in read_subtitles(tmp_path / "sdh.srt")] == [
        ("Where are you?", "JOHN"), *((text, "") for text in said[1:])]


def test_cues_group_up_to_the_span_and_not_across_a_long_gap():
    cues = [Cue(0, 4, "a"), Cue(4, 9, "b"), Cue(9.5, 12, "c"), Cue(12 + MAX_JOIN_GAP_S + 0.5, 20, "d"), Cue(20, 45, "e")]
    assert [[c.text for c in g] for g in group_cues(cues, 10.0)] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [[c.text for c in g] for g in group_cues(cues, 30.0)] == [["a", "b", "c"], ["d"], ["e"]]
    two = [Cue(0, 2, "a", "Alice"), Cue(2, 4, "b", "Alice"), Cue(4, 6, "c", "Bob"), Cue(6, 8, "d", "")]
    assert [[c.text for c in g] for g in group_cues(two, 30.0)] == [["a", "b"], ["c"], ["d"]]  # one speaker a clip


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


def test_a_cue_is_heard_when_its_words_are_written_as_scored(ljspeech, monkeypatch):
    import lora.segmenting

    cues = [Cue(1.0, 3.0, "IN EIGHTEEN THIRTEEN"), Cue(3.0, 4.5, "EIGHT THE PRESS YARD"), Cue(6.0, 8.0, "TWENTY ONE MEN")]
    heard = "In 1813, 8, the pressyard. Twenty-one, men!"  # numbers, a compound, marks: the model's spelling
    monkeypatch.setattr(lora.segmenting, "decode_chunks", lambda samples, chunks, transcribe, batch_size: [heard])
    result = segment_by_cues(ljspeech.samples, cues, None, SegmentOptions(max_cer=0.3, longform=LongformOptions(10.0)))
    assert len(result.clips) == 1 and not result.quarantined  # "8," is EIGHT; only PRESS YARD (2 words) differ
    wrong = [*cues[:2], Cue(6.0, 8.0, "NOBODY SAID ANYTHING LIKE IT")]
    result = segment_by_cues(ljspeech.samples, wrong, None, SegmentOptions(max_cer=1.0, longform=LongformOptions(10.0)))
    assert [q.reason for q in result.quarantined] == ["cue at 6.00-8.00 s not heard (5 of its 5 words missing or different)"]


def test_cues_of_two_speakers_at_once_are_quarantined_not_cut_apart(ljspeech):
    cues = [Cue(0.0, 4.0, "first words", "Ann"), Cue(3.0, 6.0, "said over her", "Ben"), Cue(6.05, 8.0, "and then", "Ann"),
            Cue(10.0, 12.0, "later on", "Ben")]
    seen = []

    def transcriber(batch):
        seen.extend(len(a) / S for a in batch)
        return ["and then", "later on"][: len(batch)]

    result = segment_by_cues(ljspeech.samples, cues, transcriber, SegmentOptions(longform=LongformOptions(10.0, batch_size=16)))
    assert [c.text for c in result.clips] == ["and then", "later on"]  # 0.05 s apart: cut between them
    assert [(q.clip.text, q.reason) for q in result.quarantined] == [
        (text, "cues at 0.00-4.00 s and 3.00-6.00 s overlap (Ann and Ben at once): no cut keeps both whole")
        for text in ("first words", "said over her")]
    assert len(seen) == 2  # the overlapping ones are not decoded


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


def test_the_best_offset_lines_the_cues_up_with_the_speech():
    speech = [(1.0, 3.0), (4.0, 4.5), (6.0, 9.0), (12.0, 13.0)]
    cues = [Cue(a, b, "x") for a, b in speech]
    fit = best_offset(speech, cues, 15.0)
    assert (fit.offset_s, fit.agreement, fit.clear) == (0.0, 1.0, False)
    for shift in (-2.5, 1.2, 4.0):
        fit = best_offset(speech, shift_cues(cues, shift), 15.0)
        assert fit.offset_s == pytest.approx(-shift) and fit.agreement == 1.0 and fit.clear
        assert fit.agreement_unshifted < 0.8
    late = best_offset(speech, shift_cues(cues, 0.6), 15.0)  # within the padding: not worth a shift
    assert late.offset_s == pytest.approx(-0.6) and abs(late.offset_s) < MIN_OFFSET_S and not late.clear
    # cues that linger after the speech: every shift within the linger is as good, and none is chosen
    lingering = [Cue(a, b + 0.8, "x") for a, b in speech]
    assert (best_offset(speech, lingering, 15.0).offset_s, best_offset(speech, lingering, 15.0).scale) == (0.0, 1.0)


def test_subtitles_timed_at_another_frame_rate_are_stretched_back():
    speech = [(1.0 + 4 * k, 2.5 + 4 * k + (k % 3) * 0.5) for k in range(30)]  # two minutes, uneven pauses
    cues = [Cue(a, b, "x") for a, b in speech]
    drifted = [Cue(round(c.start_s * 25 / 24, 3), round(c.end_s * 25 / 24, 3), "x") for c in cues]  # 24 fps cues
    fit = best_offset(speech, drifted, 125.0)
    assert fit.clear and fit.scale == pytest.approx(24 / 25, abs=1e-6) and abs(fit.offset_s) <= OFFSET_FRAME_S
    assert fit.agreement > 0.99 and fit.agreement_unshifted < 0.8
    assert [c.start_s for c in shift_cues(drifted, fit.offset_s, fit.scale)] == pytest.approx([a for a, _ in speech], abs=0.03)
    for linger in (0.5, 1.5):  # cues shown after the speech ends, as subtitles are: no stretch, no clear shift
        fit = best_offset(speech, [Cue(a, b + linger, "x") for a, b in speech], 125.0)
        assert fit.scale == 1.0 and not fit.clear


def test_subtitles_off_the_real_speech_are_found_by_vad(ljspeech):
    cues = [Cue(a, b, u.text) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)]
    assert not subtitle_offset(ljspeech.samples, cues).clear
    for shift in (3.0, -5.0):
        fit = subtitle_offset(ljspeech.samples, shift_cues(cues, shift))
        assert fit.clear and fit.offset_s == pytest.approx(-shift, abs=0.3)


def test_a_last_cue_left_on_screen_past_the_end_is_named_in_the_warning(ljspeech, tmp_path, caplog):
    """Rightly timed cues whose last one runs on past the recording's end (left on screen, or the video is
    longer) drew "the cues look timed at another frame rate" with nothing else to go by: on speech with short
    pauses and cues spanning whole sentences, the frames cannot tell it from cues that are late or stretched.
    The warning now says the last cue overruns and the cues may be right as timed; rightly timed cues that
    end with the recording draw no warning."""
    from lora.scripts.segment import timed_cues

    cues = [(a, b, u.text) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)]
    total = len(ljspeech.samples) / S
    write_srt(tmp_path / "right.srt", cues)
    write_srt(tmp_path / "overrun.srt", cues[:-1] + [(cues[-1][0], total + 15.0, cues[-1][2])])
    utterance = Utterance("talk", "9001", "x", str(tmp_path / "talk.flac"), extra={"subtitles": str(tmp_path / "right.srt")})
    with caplog.at_level(logging.WARNING, logger="lora"):
        assert timed_cues(utterance, ljspeech.samples, None)[1] is False
    assert not caplog.records
    overrun = Utterance("talk", "9001", "x", str(tmp_path / "talk.flac"), extra={"subtitles": str(tmp_path / "overrun.srt")})
    with caplog.at_level(logging.WARNING, logger="lora"):
        left_as_timed = timed_cues(overrun, ljspeech.samples, None)
    assert [c.start_s for c in left_as_timed[0]] == pytest.approx([a for a, _, _ in cues], abs=1e-3)
    assert left_as_timed[1]  # the frames call it off on this 61 s recording ...
    assert "that rests on the last cue ending 15.0 s past the recording's end" in caplog.text


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


@pytest.mark.parametrize("shift, overlap, hint", [
    (3600.0, 0.0, "cues timed outside the recording: pass this recording's subtitles, or move them with --subtitle-offset SECONDS"),
    (0.0, 0.3, "cues timed over each other: make each cue end before the next starts"),
])
def test_segment_cli_says_what_is_wrong_when_the_cue_times_quarantine_every_clip(ljspeech, tmp_path, monkeypatch, shift,
                                                                                 overlap, hint):
    import soundfile as sf

    from lora.scripts import segment

    def never(batch):
        raise AssertionError("no clip of these cues is decoded")

    monkeypatch.setattr(segment, "resolve_model_id", lambda name: name)
    monkeypatch.setattr(segment, "load_base", lambda name: (None, None, None))
    monkeypatch.setattr(segment, "torch_transcriber", lambda *args: never)
    audio = tmp_path / "talk.flac"
    sf.write(str(audio), ljspeech.samples, S, format="FLAC", subtype="PCM_16")
    # an hour late (timed against a longer cut), or each cue running 0.3 s into the next, cut every 10 s
    write_srt(tmp_path / "talk.srt", [(a + shift, b + shift + overlap, u.text)
                                      for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)])
    out = tmp_path / "clips" / "talk.jsonl"
    with pytest.raises(UserError, match=f"every chunk was quarantined .*; {re.escape(hint)}$"):
        segment._main(["--audio", str(audio), "--transcript", f"@{tmp_path / 'talk.srt'}", "--output", str(out),
                       "--max-chunk-s", "10", "--quiet"])


@pytest.mark.slow
def test_segment_cli_reads_automatic_rolling_captions_once(ljspeech, tmp_path):
    import soundfile as sf

    from lora.scripts import segment

    audio = tmp_path / "video.flac"
    sf.write(str(audio), ljspeech.samples, S, format="FLAC", subtype="PCM_16")
    write_rolling_vtt(tmp_path / "video.en.vtt", [(a, b, u.text) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)])
    out = tmp_path / "clips" / "video.jsonl"
    assert segment.main(["--audio", str(audio), "--transcript", f"@{tmp_path / 'video.en.vtt'}", "--output", str(out),
                         "--max-chunk-s", "15", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (tmp_path / "clips" / "quarantine.jsonl").read_text() == ""
    assert " ".join(r["text"] for r in rows).split() == " ".join(u.text for u in ljspeech.utterances).split()


@pytest.mark.slow
def test_segment_cli_warns_of_subtitles_off_the_speech_and_shifts_them_when_asked(ljspeech, tmp_path, capsys):
    import soundfile as sf

    from lora.scripts import segment

    audio = tmp_path / "video.flac"
    sf.write(str(audio), ljspeech.samples, S, format="FLAC", subtype="PCM_16")
    late = [(a + 4.0, b + 4.0, u.text) for u, (a, b) in zip(ljspeech.utterances, ljspeech.bounds)]
    write_srt(tmp_path / "video.srt", late)  # timed against a cut with four seconds more before the speech
    runs = {}
    for name, extra in (("as_timed", []), ("auto", ["--subtitle-offset", "auto"])):
        out = tmp_path / name / "video.jsonl"
        code = segment.main(["--audio", str(audio), "--transcript", f"@{tmp_path / 'video.srt'}", "--output", str(out),
                             "--max-chunk-s", "15", *extra])
        runs[name] = (code, out, capsys.readouterr())
    code, out, seen = runs["as_timed"]  # four seconds late: every clip holds the words of the cue before
    assert code == 2 and out.read_text() == ""
    warned = re.search(r"video.srt: the cues look (\d\.\d\d) s late against the speech in \S*video.flac \(speech and "
                       r"cues agree on \d+% of the subtitles' span as timed, \d+% moved; that rests on the last cue "
                       r"ending (\d\.\d) s past the recording's end: if it was only left on screen, the cues are right "
                       r"as timed\); pass --subtitle-offset auto \(or -(\d\.\d\d)\) to shift them", seen.err)
    # on this recording (short pauses, cues spanning whole sentences) the frames go by the cues past its end alone
    assert warned and float(warned[1]) == float(warned[3]) == pytest.approx(4.0, abs=0.3) and float(warned[2]) == 4.0
    assert seen.err.strip().splitlines()[-1].endswith("the subtitles look off the speech (warned above): "
                                                      "pass --subtitle-offset auto")
    code, out, seen = runs["auto"]
    assert code == 0 and "look" not in seen.err and re.search(r"video.srt: cues shifted -[34]\.\d\d s", seen.out)
    assert (out.parent / "quarantine.jsonl").read_text() == ""
    kept = " ".join(json.loads(line)["text"] for line in out.read_text().splitlines())
    assert kept.split() == " ".join(u.text for u in ljspeech.utterances).split()


@pytest.mark.slow
def test_segment_cli_names_each_clip_by_who_speaks_in_a_meeting(speech_dir, tmp_path):
    """Two readers taking turns in one recording (real dev-clean speech), a Teams-style transcript naming them:
    every clip is one reader's, named as the transcript names them, so a split can hold a reader out."""
    import numpy as np
    import soundfile as sf

    from lora.data.records import read_librispeech_dir
    from lora.scripts import segment

    chapters = chapter_groups(read_librispeech_dir(speech_dir, ["dev-clean"]))
    first, second = chapters["1988-24833"], chapters["3752-4944"]
    turns = [u for pair in zip(first, second) for u in pair]
    parts = [u.samples() for u in turns]
    ends = np.cumsum([len(x) for x in parts]) / S
    starts = np.concatenate([[0.0], ends[:-1]])
    sf.write(str(tmp_path / "meeting.flac"), np.concatenate(parts), S, format="FLAC", subtype="PCM_16")
    names = {"1988": "Ann Reader", "3752": "Ben Reader"}
    (tmp_path / "meeting.vtt").write_text("WEBVTT\n\n" + "".join(
        f"{subtitle_timestamp(a, '.')} --> {subtitle_timestamp(b, '.')}\n<v {names[u.speaker]}>{u.text.capitalize()}</v>\n\n"
        for u, a, b in zip(turns, starts, ends)), encoding="utf-8")
    out = tmp_path / "clips" / "meeting.jsonl"
    assert segment.main(["--audio", str(tmp_path / "meeting.flac"), "--transcript", f"@{tmp_path / 'meeting.vtt'}",
                         "--output", str(out), "--speaker", "weekly-call", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(turns) and {r["speaker"] for r in rows} == set(names.values())
    for row, u in zip(rows, turns):  # each turn its own clip: turns alternate, and clips hold one speaker
        assert row["speaker"] == names[u.speaker] and row["text"].split() == u.text.capitalize().split()
