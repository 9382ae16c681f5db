"""Long-form transcription: the chunk planner (pure), silero VAD on real speech, batching, subtitles,
and (slow) long-form WER of a real model against transcribing the same utterances one by one."""

from __future__ import annotations

import numpy as np
import pytest

from lora.core.audio import SAMPLE_RATE
from lora.data.long_recordings import JoinedRecording, chapter_groups, join_utterances
from lora.longform import (
    ENERGY_WINDOW_S,
    LongformOptions,
    Segment,
    continue_sentences,
    decode_chunks,
    detect_speech,
    plan_chunks,
    readable_cues,
    to_srt,
    to_vtt,
    transcribe_long,
)

S = SAMPLE_RATE


def seconds(spans):
    return [(a / S, b / S) for a, b in spans]


def samples_of(spans_s):
    return [(round(a * S), round(b * S)) for a, b in spans_s]


@pytest.fixture(scope="module")
def ljspeech(speech_dir) -> JoinedRecording:
    """The 11 LJSpeech utterances of ../shared/speech joined in order (one speaker, 61 s)."""
    from lora.data.records import read_librispeech_dir

    groups = chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech"]))
    assert list(groups) == ["9001-1"]
    return join_utterances("9001-1", groups["9001-1"])


@pytest.fixture(scope="module")
def ljspeech_speech(ljspeech):
    return detect_speech(ljspeech.samples)


# --- plan_chunks (pure) ------------------------------------------------------------------------


def test_a_sentence_cut_between_chunks_does_not_gain_a_capital():
    texts = ["unless a system is established,", "For the frequent review", "The Gutenberg Bible.", "The end", "",
             "Paris was quiet", "I think so", "There, it is."]
    assert continue_sentences(texts) == ["unless a system is established,", "for the frequent review",
                                         "the Gutenberg Bible.",
                                         "The end",  # the chunk before ended a sentence: kept
                                         "", "Paris was quiet",  # a name stays (the empty chunk is looked past)
                                         "I think so", "there, it is."]
    assert continue_sentences(["He said \u201cno.\u201d", "The rest"]) == ["He said \u201cno.\u201d", "The rest"]
    assert continue_sentences(["a", "THE END", "To"]) == ["a", "THE END", "to"]  # capitals throughout: not a cut's


def test_no_speech_no_chunks():
    assert plan_chunks([], 10 * S) == []


def test_short_recording_is_one_chunk_from_first_speech_to_last():
    speech = samples_of([(0.5, 2.0), (2.5, 4.0), (6.0, 8.0)])
    assert plan_chunks(speech, 9 * S, max_chunk_s=30) == [(speech[0][0], speech[-1][1])]


def test_cut_in_the_longest_pause_that_leaves_the_chunk_half_full():
    speech = samples_of([(0, 2), (2.1, 4), (5.5, 7), (7.1, 9), (9.4, 11), (11.5, 13)])
    chunks = seconds(plan_chunks(speech, 14 * S, max_chunk_s=10))
    # the 1.5 s pause at 4 s would leave the first chunk under 5 s; the 0.4 s pause at 9 s is the longest after that
    assert chunks == [(0, 9), (9.4, 13)]


def test_min_fill_zero_cuts_in_the_longest_pause():
    speech = samples_of([(0, 2), (2.1, 4), (5.5, 7), (7.1, 9), (9.4, 11), (11.5, 13)])
    assert seconds(plan_chunks(speech, 14 * S, max_chunk_s=10, min_fill=0.0)) == [(0, 4), (5.5, 13)]


def test_chunks_fit_cover_every_region_and_never_cut_speech():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, speech = 0.0, []
        for _ in range(rng.integers(1, 40)):
            t += rng.uniform(0.05, 2.0)
            d = rng.uniform(0.3, 8.0)
            speech.append((t, t + d))
            t += d
        spans = samples_of(speech)
        chunks = plan_chunks(spans, round(t * S) + S, max_chunk_s=12)
        assert all(b - a <= 12 * S for a, b in chunks)
        assert all(chunks[i][1] <= chunks[i + 1][0] for i in range(len(chunks) - 1))
        for a, b in spans:  # each region lies inside exactly one chunk
            assert sum(ca <= a and b <= cb for ca, cb in chunks) == 1
        assert {c[0] for c in chunks} <= {a for a, _ in spans} and {c[1] for c in chunks} <= {b for _, b in spans}


def test_overlapping_regions_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks(samples_of([(0, 3), (2, 5)]), 6 * S)


def test_an_overlong_region_needs_the_samples():
    with pytest.raises(ValueError, match="exceeds max_chunk_s"):
        plan_chunks([(0, 40 * S)], 40 * S, max_chunk_s=30)


def test_an_overlong_region_is_cut_at_its_quietest_100ms(ljspeech):
    x = ljspeech.samples
    chunks = plan_chunks([(0, len(x))], len(x), max_chunk_s=30, samples=x)
    assert len(chunks) == 3 and chunks[0][0] == 0 and chunks[-1][1] == len(x)
    assert all(b - a <= 30 * S for a, b in chunks)
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))  # contiguous: no audio dropped
    half = int(ENERGY_WINDOW_S * S) // 2
    first_cut = chunks[0][1]

    def energy(c):
        return float(np.sum(x[max(c - half, 0): c + half].astype(np.float64) ** 2))

    candidates = range(15 * S, 30 * S + 1, S // 100)  # 10 ms hop over the second half of the allowed span
    assert energy(first_cut) == pytest.approx(min(energy(c) for c in candidates))
    assert energy(first_cut) < 0.01 * np.mean([energy(c) for c in candidates])


# --- VAD on real speech ------------------------------------------------------------------------


def test_vad_finds_the_pauses_of_a_real_61s_join(ljspeech, ljspeech_speech):
    assert ljspeech.seconds == pytest.approx(61.1, abs=0.1)
    speech = ljspeech_speech
    assert len(speech) >= 5
    assert all(0 <= a < b <= len(ljspeech.samples) for a, b in speech)
    assert all(speech[i][1] <= speech[i + 1][0] for i in range(len(speech) - 1))
    voiced = sum(b - a for a, b in speech) / len(ljspeech.samples)
    assert 0.7 < voiced < 0.99  # read speech: mostly voiced, with real pauses
    chunks = plan_chunks(speech, len(ljspeech.samples), 30.0, ljspeech.samples)
    assert 3 <= len(chunks) <= 4
    assert all(b - a <= 30 * S for a, b in chunks)


def test_vad_leaves_torch_thread_count_alone(speech_dir):
    # a fresh process: importing silero_vad sets torch's thread count to 1 process-wide
    import subprocess
    import sys

    code = (
        "import sys, torch; torch.set_num_threads(3)\n"
        "from lora.core.audio import load_audio; from lora.longform import detect_speech\n"
        "found = detect_speech(load_audio(sys.argv[1]))\n"
        "print(len(found), torch.get_num_threads())\n"
    )
    audio = speech_dir / "ljspeech" / "9001" / "1" / "9001-1-0001.flac"
    out = subprocess.run([sys.executable, "-c", code, str(audio)], capture_output=True, text=True, check=True)
    regions, threads = map(int, out.stdout.split())
    assert regions >= 1 and threads == 3


# --- decoding and stitching --------------------------------------------------------------------


def test_chunks_decoded_in_batches_and_stitched_in_order(ljspeech, ljspeech_speech):
    calls: list[int] = []

    def fake_transcriber(batch):  # names each chunk by its length: checks order, not recognition
        calls.append(len(batch))
        return [f" {len(c)} " if len(c) % 2 == 0 else "" for c in batch]

    result = transcribe_long(ljspeech.samples, fake_transcriber, LongformOptions(max_chunk_s=5, batch_size=3),
                             speech=ljspeech_speech)
    assert all(n <= 3 for n in calls) and sum(calls) == len(result.segments)
    lengths = [round((s.end_s - s.start_s) * S) for s in result.segments]
    assert [s.text for s in result.segments] == [str(n) if n % 2 == 0 else "" for n in lengths]
    assert result.text == " ".join(str(n) for n in lengths if n % 2 == 0)
    assert all(s.end_s - s.start_s <= 5 for s in result.segments)


def test_a_transcriber_returning_the_wrong_count_is_an_error(ljspeech, ljspeech_speech):
    with pytest.raises(ValueError, match="returned 0 texts"):
        decode_chunks(ljspeech.samples, plan_chunks(ljspeech_speech, len(ljspeech.samples)), lambda b: [])


# --- subtitles ---------------------------------------------------------------------------------


SEGMENTS = [Segment(0.0, 2.5, "Printing, in the only sense"), Segment(3.0, 3.5, ""), Segment(3661.5, 3725.0049, "Modern.")]


def test_srt_format():
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nPrinting, in the only sense\n\n"
        "2\n01:01:01,500 --> 01:02:05,005\nModern.\n\n"
    )


def test_vtt_format():
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nPrinting, in the only sense\n\n"
        "01:01:01.500 --> 01:02:05.005\nModern.\n\n"
    )


# --- real model --------------------------------------------------------------------------------


@pytest.mark.slow
def test_moonshine_long_form_wer_within_one_point_of_one_by_one(ljspeech, ljspeech_speech):
    from lora.evaluation import score
    from lora.longform import torch_transcriber
    from lora.model_utils import load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id("moonshine-base-en"))
    transcribe = torch_transcriber(model, processor, family, batch_size=4)
    utts = ljspeech.utterances
    one_by_one = transcribe([u.samples() for u in utts])
    wer_one = score([u.id for u in utts], [u.text for u in utts], one_by_one)["wer"]
    long = transcribe_long(ljspeech.samples, transcribe, LongformOptions(max_chunk_s=family.longform_chunk_s),
                           speech=ljspeech_speech)
    wer_long = score([ljspeech.id], [ljspeech.text], [long.text])["wer"]
    assert wer_one < 0.2  # the model works on these utterances at all
    assert wer_long <= wer_one + 0.01, (wer_long, wer_one, long.text)
    assert len(long.segments) >= 3 and all(s.text for s in long.segments)


def test_readable_cues_cut_a_long_chunk_at_clause_ends_and_keep_every_word():
    """A 28 s chunk of ~450 characters (what `lora stt --srt` wrote as one cue) becomes cues of at most two lines of
    42 characters and 7 s, cut after a clause's mark where one falls late enough, times shared by characters."""
    said = "the quick brown fox jumps over the lazy dog, and then it ran away into the forest where nobody found it. " * 4
    cues = readable_cues([Segment(10.0, 38.0, said), Segment(38.0, 38.5, " "), Segment(40.0, 41.5, "Yes.")])
    assert " ".join(c.text.replace("\n", " ") for c in cues) == " ".join(said.split()) + " Yes."
    assert all(len(line) <= 42 for c in cues for line in c.text.split("\n")) and max(c.text.count("\n") for c in cues) == 1
    assert all(c.end_s - c.start_s <= 7.0 for c in cues)
    assert [c.text for c in cues[:2]] == ["the quick brown fox\njumps over the lazy dog,",
                                         "and then it ran away into the\nforest where nobody found it."]
    assert cues[0].start_s == 10.0 and cues[-2].end_s == pytest.approx(38.0) and cues[-1] == Segment(40.0, 41.5, "Yes.")
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(cues[:-2], cues[1:-1]))  # contiguous inside a chunk
    assert to_srt(cues).count(" --> ") == len(cues)
