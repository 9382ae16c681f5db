"""The digits sweep (recipes/digits_sweep.py): its selection rule on made-up result rows, its grids, its style
check's audio (recipes/style_audio.py) and its narrow-band replay copies."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lora.core.audio import SAMPLE_RATE
from lora.data.records import read_librispeech_dir
from lora.data.selection import mix_replay, replay_mask
from recipe_scripts import load_recipe

sweep = load_recipe("digits_sweep")
style_audio = load_recipe("style_audio")


def row(valid, forget, seconds, **extra):
    return {"valid_wer": valid, "valid_loss": valid, "forget_wer": forget, "train_seconds": seconds} | extra


def test_lowest_validation_wer_within_both_budgets_wins():
    rows = [row(0.02, 0.013, 694, name="all"), row(0.04, 0.013, 150, name="decoder"),
            row(0.01, 0.05, 100, name="forgets")]
    assert sweep.choose(rows, {"forget_wer": 0.013})["name"] == "decoder"


def test_over_time_budget_is_not_eligible_but_fast_enough_is():
    budget = sweep.TRAIN_BUDGET_S
    rows = [row(0.02, 0.0, budget + 1, name="slow"), row(0.06, 0.0, budget, name="at budget")]
    assert sweep.choose(rows, {"forget_wer": 0.0})["name"] == "at budget"


def test_nothing_within_budgets_falls_back_to_least_forgetting():
    rows = [row(0.02, 0.05, 50, name="a"), row(0.09, 0.03, 900, name="b")]
    assert sweep.choose(rows, {"forget_wer": 0.0})["name"] == "b"


def test_style_lost_on_either_check_is_not_eligible():
    """Against the base model's output (no human reference) the verdict's thresholds; against a human reference
    at least the base model's own F1."""
    baseline = {"forget_wer": 0.0, "human_punctuation_f1_per_clip": [0.0, 0.933, 0.857],
                "human_capitalisation_f1_per_clip": [0.4, 1.0, None]}
    styled = {"forget_punctuation_f1": 1.0, "forget_capitalisation_f1": 1.0}
    rows = [row(0.05, 0.0, 60, name="kept", **styled, human_punctuation_f1_per_clip=[0.947, 0.933, 0.889],
                human_capitalisation_f1_per_clip=[1.0, 1.0, 0.5]),
            # better than the base model pooled (its first clip is unpunctuated), worse on the third clip
            row(0.01, 0.0, 60, name="loses a clip", **styled, human_punctuation_f1_per_clip=[1.0, 0.933, 0.5],
                human_capitalisation_f1_per_clip=[1.0, 1.0, 1.0]),
            row(0.02, 0.0, 60, name="loses to base", forget_punctuation_f1=0.85, forget_capitalisation_f1=1.0)]
    assert sweep.choose(rows, baseline)["name"] == "kept"


def test_the_fallback_prefers_style_kept_at_the_same_forgetting_wer():
    """Nothing within the budgets (all lose style on the base-referenced check but one, which trains too long):
    the least forgetting, with style counted before validation WER."""
    rows = [row(0.07, 0.013, 100, name="best valid", forget_punctuation_f1=0.68, forget_capitalisation_f1=0.82),
            row(0.09, 0.013, 900, name="style kept", forget_punctuation_f1=0.95, forget_capitalisation_f1=0.97)]
    assert sweep.choose(rows, {"forget_wer": 0.013})["name"] == "style kept"


def test_style_scores_use_the_human_reference_where_a_clip_has_one():
    base = ["Hello hello i didn't know", "Two stray kittens, at home."]
    tuned = ["Hello? Hello. I didn't know.", "Two stray kittens. At home."]
    human = "Hello? Hello? I didn't know."
    scores = sweep.style_scores(tuned, base, [human, None])
    # the read clip against the base model's output: its comma became a stop ("At" capitalised)
    assert scores["forget_punctuation_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert scores["forget_capitalisation_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1))
    # the conversation against the human text: "?", "?" and "." written "?", "." and "."; every capital right
    assert scores["human_punctuation_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["human_capitalisation_f1"] == 1.0
    assert scores["human_punctuation_f1_per_clip"] == [pytest.approx(2 / 3)]
    assert scores["human_capitalisation_f1_per_clip"] == [1.0]
    assert sweep.style_scores(tuned[1:], base[1:], [None])["human_punctuation_f1"] is None


def test_a_style_clip_with_text_beside_it_has_a_human_reference(tmp_path):
    clip = tmp_path / "pyannote-sample-00.flac"
    clip.write_bytes(b"")
    assert sweep.human_reference(str(clip)) is None
    clip.with_suffix(".txt").write_text("Hello? Oh, hello.\n", encoding="utf-8")
    assert sweep.human_reference(str(clip)) == "Hello? Oh, hello."


@pytest.mark.parametrize("family,name", [("whisper", "default"), ("whisper", "fast"), ("moonshine", "default"),
                                         ("moonshine", "recipe"), ("moonshine", "placement"),
                                         ("moonshine", "consensus"), ("moonshine", "style")])
def test_every_grid_point_is_complete(family, name):
    keys = {"learning_rate", "lora_r", "lora_alpha", "targets", "max_steps", "replay_share", "join_clips"}
    points = list(sweep.grid(family, name))
    assert points and all(keys <= set(p) for p in points)
    assert all(p["targets"] in ("all", "decoder", "encoder") for p in points)


def test_the_default_style_audio_is_real_speech_outside_the_recipes_sets():
    """The style check's extra clip (the moonshine-cpp wheel's Beckett reading) exists where the package does,
    and is none of the speech folder's files (so neither trained on, replayed, nor the canary)."""
    files = sweep.default_style_audio()
    if importlib.util.find_spec("moonshine_cpp") is None:
        assert files == []
        return
    import soundfile as sf

    (path,) = files
    info = sf.info(path)
    assert info.frames / info.samplerate > 5 and Path(path).name == "beckett.wav"
    assert "shared/speech" not in Path(path).resolve().as_posix()


def test_conversation_turns_become_clips_of_at_most_ten_seconds():
    """The pinned sample's reference (pyannote.audio 4.0.7 `sample.stm`, two lines shown) and the cut: turns
    are grouped while the clip stays within MAX_CLIP_S; a longer turn is a clip of its own, never split."""
    stm = ("sample 1 Diane 6.68 7.16 Hello?\n"
           "sample 1 Sheila 7.634 8.155 Hello?\n"
           "not a turn\n")
    assert style_audio.read_turns(stm) == [(6.68, 7.16), (7.634, 8.155)]
    turns = [(0.0, 4.0), (4.5, 9.0), (9.5, 12.0), (12.0, 30.0), (30.5, 31.0)]
    assert style_audio.clips_from_turns(turns, 10.0) == [(0.0, 9.0), (9.5, 12.0), (12.0, 30.0), (30.5, 31.0)]


def test_each_clip_carries_the_human_text_of_its_turns():
    stm = ("sample 1 Diane 8.436 8.876 Oh, hello.\n"
           "sample 1 Diane 6.68 7.16 Hello?\n"
           "sample 1 Sheila 14.444 17.769 And I'm Sheila in Texas, originally from Chicago.\n")
    cues = style_audio.read_cues(stm)
    assert cues[0] == (6.68, 7.16, "Hello?")
    clips = style_audio.clips_from_turns([(a, b) for a, b, _ in cues], 5.0)
    assert style_audio.clip_texts(cues, clips) == ["Hello? Oh, hello.", "And I'm Sheila in Texas, originally from Chicago."]


def _band_energy(samples: np.ndarray, low_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(spectrum[freqs >= low_hz].sum() / spectrum.sum())


def test_copies_are_the_same_real_speech_cut_to_four_kilohertz(speech_dir):
    rows = read_librispeech_dir(speech_dir, ["jfk"])[:1] + read_librispeech_dir(speech_dir, ["dev-clean"])[:1]
    copies = sweep.narrowband_copies(rows)
    assert [c.id for c in copies] == [u.id + "~8k" for u in rows]
    for u, c in zip(rows, copies, strict=True):
        assert (c.speaker, c.text, c.subset, c.sampling_rate) == (u.speaker, u.text, u.subset, 8000)
        wide, narrow = u.samples(), c.samples()  # back at 16 kHz, as the loader reads them
        assert abs(len(narrow) - len(wide)) <= 2
        assert _band_energy(wide, 4200) > 1e-5  # the original has energy above 4 kHz (JFK: 3.7e-5, dev-clean: 5e-3) ...
        assert _band_energy(narrow, 4200) < 1e-7  # ... the copy none (1.5e-9, 6.6e-10)
        # below 3.5 kHz the copy is the original (the pass band of soxr's filter)
        lo_w = np.fft.rfft(wide)[: int(3500 * len(wide) / SAMPLE_RATE)]
        lo_n = np.fft.rfft(narrow[: len(wide)])[: len(lo_w)]
        assert np.linalg.norm(lo_w - lo_n) < 0.05 * np.linalg.norm(lo_w)


def test_copies_join_the_replay_share_as_distinct_rows(speech_dir):
    replay = read_librispeech_dir(speech_dir, ["jfk"])
    train = read_librispeech_dir(speech_dir, ["dev-clean"])
    mixed = mix_replay(train, replay + sweep.narrowband_copies(replay), 0.5)
    ids = [u.id for u in mixed[len(train):]]
    assert len(ids) >= 2 and {i.removesuffix("~8k") for i in ids} == {u.id for u in replay}
    assert any(i.endswith("~8k") for i in ids) and any(not i.endswith("~8k") for i in ids)


def test_replay_mask_marks_the_replay_rows_of_the_mix(speech_dir):
    """The rows `--replay-distillation` applies to: every copy of a replay row, no training row."""
    replay = read_librispeech_dir(speech_dir, ["jfk"])
    train = read_librispeech_dir(speech_dir, ["dev-clean"])
    mixed = mix_replay(train, replay, 0.5)
    mask = replay_mask((u.id for u in mixed), replay)
    assert mask.dtype == bool and mask.tolist() == [False] * len(train) + [True] * (len(mixed) - len(train))
