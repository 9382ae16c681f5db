"""Cutting a long real recording into clips: word assignment (pure), quarantine, the clip writer,
and (slow) word placement with a real model on the 61 s LJSpeech join."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from lora.core.audio import SAMPLE_RATE
from lora.data.alignment import align_words
from lora.data.long_recordings import JoinedRecording, chapter_groups, join_utterances
from lora.longform import LongformOptions, detect_speech, plan_chunks
from lora.segmenting import (
    Clip,
    SegmentOptions,
    assign_words,
    segment_recording,
    word_placement_accuracy,
    write_clip_audio,
    write_manifest,
)

S = SAMPLE_RATE


@pytest.fixture(scope="module")
def ljspeech(speech_dir) -> JoinedRecording:
    """The 11 LJSpeech utterances of ../shared/speech joined in order (one speaker, 61 s)."""
    from lora.data.records import read_librispeech_dir

    return join_utterances("9001-1", chapter_groups(read_librispeech_dir(speech_dir, ["ljspeech"]))["9001-1"])


@pytest.fixture(scope="module")
def ljspeech_speech(ljspeech):
    return detect_speech(ljspeech.samples)


# --- assign_words (pure) -----------------------------------------------------------------------


def test_paired_words_take_their_hypothesis_chunk():
    ref = ["a", "b", "c", "d", "e", "f"]
    hyp = ["a", "b", "c", "d", "e", "f"]
    assert assign_words(6, [0, 0, 0, 1, 1, 1], align_words(ref, hyp)) == [0, 0, 0, 1, 1, 1]


def test_deleted_words_go_to_the_nearer_chunk_in_alignment_order():
    ref = ["a", "b", "x", "y", "z", "c", "d"]
    hyp = ["a", "b", "c", "d"]  # x y z deleted between chunk 0 (a b) and chunk 1 (c d)
    assert assign_words(7, [0, 0, 1, 1], align_words(ref, hyp)) == [0, 0, 0, 0, 1, 1, 1]  # y: tie -> earlier


def test_insertions_count_as_distance():
    ref = ["a", "x", "c"]
    hyp = ["a", "q", "r", "c"]  # x pairs with q (substitution); r is inserted
    pairs = align_words(ref, hyp)
    assert assign_words(3, [0, 1, 1, 1], pairs) == [0, 1, 1]


def test_leading_and_trailing_deletions_go_to_the_first_and_last_chunk():
    ref = ["x", "a", "b", "y"]
    assert assign_words(4, [0, 1], align_words(ref, ["a", "b"])) == [0, 0, 1, 1]


def test_no_anchor_is_an_error():
    with pytest.raises(ValueError, match="cannot place"):
        assign_words(2, [], align_words(["a", "b"], []))


# --- segment_recording with a scripted transcriber on real audio ------------------------------


def scripted_hypotheses(rec: JoinedRecording, chunks) -> list[str]:
    """What a perfect recogniser would say per chunk: the words whose known time falls in it
    (nearest chunk for words in a gap), lower case."""
    words, times = rec.text.split(), rec.word_times()
    centres = [((a + b) / 2 / S) for a, b in chunks]
    per_chunk: list[list[str]] = [[] for _ in chunks]
    for w, t in zip(words, times):
        inside = [k for k, (a, b) in enumerate(chunks) if a / S <= t <= b / S]
        k = inside[0] if inside else int(np.argmin([abs(t - c) for c in centres]))
        per_chunk[k].append(w.lower())
    return [" ".join(ws) for ws in per_chunk]


def test_clean_chunks_kept_garbled_chunk_quarantined(ljspeech, ljspeech_speech):
    options = SegmentOptions(max_cer=0.2, longform=LongformOptions(max_chunk_s=30, batch_size=16))
    chunks = plan_chunks(ljspeech_speech, len(ljspeech.samples), 30, ljspeech.samples)
    hyps = scripted_hypotheses(ljspeech, chunks)
    assert len(hyps) >= 3
    dropped = hyps[0].split()[-1]
    hyps[0] = " ".join(hyps[0].split()[:-1])  # last word of chunk 0 not recognised
    hyps[-1] = " ".join("blah" for _ in hyps[-1].split())  # chunk recognised as nonsense

    def transcriber(batch):  # one call for every chunk (batch_size 16): hypotheses in chunk order
        assert [len(b) for b in batch] == [b - a for a, b in chunks]
        return hyps

    result = segment_recording(ljspeech.samples, ljspeech.text, transcriber, options, speech=ljspeech_speech)
    assert len(result.clips) == len(chunks) - 1
    assert [q.clip.start_s for q in result.quarantined] == [chunks[-1][0] / S]
    assert result.quarantined[0].reason.startswith("cer ") and result.quarantined[0].clip.cer > 0.5
    words = ljspeech.text.split()
    every = [*result.clips, *(q.clip for q in result.quarantined)]
    assert [w for c in every for w in c.text.split()] == words  # every word once, in order
    assert all(c.cer is not None and c.cer <= 0.2 for c in result.clips)
    # the unrecognised word sits between chunk 0's last word and chunk 1's first (a tie): it stays in clip 0
    assert result.clips[0].text.split()[-1].lower() == dropped and result.clips[0].cer > 0
    assert word_placement_accuracy(result, ljspeech.word_times()) == 1.0


def test_a_chunk_with_no_hypothesis_gets_no_words_and_its_neighbours_fail_the_cer_check(ljspeech, ljspeech_speech):
    chunks = plan_chunks(ljspeech_speech, len(ljspeech.samples), 30, ljspeech.samples)
    hyps = scripted_hypotheses(ljspeech, chunks)
    assert len(hyps) == 3
    hyps[1] = ""
    result = segment_recording(ljspeech.samples, ljspeech.text, lambda batch: hyps[: len(batch)],
                               SegmentOptions(longform=LongformOptions(batch_size=16)), speech=ljspeech_speech)
    # chunk 1's words have nothing to align to, so they go to chunks 0 and 2, whose CER then exceeds max_cer
    assert result.clips == ()
    reasons = {round(q.clip.start_s * S): q.reason for q in result.quarantined}
    assert reasons[chunks[1][0]] == "no reference words assigned"
    assert reasons[chunks[0][0]].startswith("cer ") and reasons[chunks[2][0]].startswith("cer ")


# --- writer --------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_format", ["flac", "wav"])
def test_write_clips_audio_and_manifest(ljspeech, tmp_path, audio_format):
    from lora.data.manifest import read_source

    clips = [Clip(0.25, 4.0, "PRINTING IN THE ONLY SENSE", 0.0, "printing in the only sense", 0, 5),
             Clip(9.7, 11.5, "IN BEING COMPARATIVELY MODERN", 0.0, "in being comparatively modern", 5, 9)]
    rows = write_clip_audio(ljspeech.samples, clips, tmp_path / "out", "lj", speaker="9001", source="lj.flac",
                            audio_format=audio_format)
    manifest = write_manifest(tmp_path / "out" / "manifest.jsonl", rows)
    assert manifest == tmp_path / "out" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["lj-0000", "lj-0001"]
    assert rows[1] == {"id": "lj-0001", "audio": f"clips/lj-0001.{audio_format}", "text": "IN BEING COMPARATIVELY MODERN",
                       "speaker": "9001", "seconds": 1.8, "source": "lj.flac", "start_s": 9.7, "end_s": 11.5}
    info = sf.info(tmp_path / "out" / rows[0]["audio"])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (S, 1, "PCM_16", round(3.75 * S))
    audio, _ = sf.read(tmp_path / "out" / rows[0]["audio"], dtype="float32")
    original = ljspeech.samples[round(0.25 * S): round(4.0 * S)]
    assert np.max(np.abs(audio - original)) < 2 / 32768  # 16-bit quantisation only
    read = read_source(manifest)
    assert [u.text for u in read.rows] == [c.text for c in clips] and not read.bad
    assert not list((tmp_path / "out").rglob(".*"))  # no temp files left behind


def test_clips_of_a_segment_row_are_timed_in_its_file(ljspeech, tmp_path):
    """`lora segment --manifest` on a row that is a segment of a longer file (NeMo `offset` 30 s): its clips' start_s and
    end_s were times within the segment, not the file they name as their source."""
    clips = [Clip(0.25, 4.0, "PRINTING IN THE ONLY SENSE", 0.0, "printing in the only sense", 0, 5)]
    row, = write_clip_audio(ljspeech.samples, clips, tmp_path / "out", "lj@30-45", source="talk.flac", offset_s=30.0)
    assert (row["start_s"], row["end_s"], row["seconds"]) == (30.25, 34.0, 3.75)


def test_write_clips_rejects_unknown_format(ljspeech, tmp_path):
    with pytest.raises(ValueError, match="audio_format"):
        write_clip_audio(ljspeech.samples, [], tmp_path, "x", audio_format="mp3")


# --- real model --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("max_chunk_s", [30.0, 10.0])
def test_moonshine_segmentation_places_words_in_their_clip(ljspeech, ljspeech_speech, max_chunk_s):
    from lora.longform import torch_transcriber
    from lora.model_utils import load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id("moonshine-base-en"))
    options = SegmentOptions(longform=LongformOptions(max_chunk_s=max_chunk_s, batch_size=4))
    result = segment_recording(ljspeech.samples, ljspeech.text, torch_transcriber(model, processor, family, 4),
                               options, speech=ljspeech_speech)
    accuracy = word_placement_accuracy(result, ljspeech.word_times())
    assert accuracy >= 0.9, (accuracy, result)
    assert len(result.clips) >= 61 / max_chunk_s
    assert all(c.cer <= 0.2 and c.end_s - c.start_s <= max_chunk_s for c in result.clips)
