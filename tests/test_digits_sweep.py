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
    assert sweep.choose(rows, baseline_forget_wer=0.013)["name"] == "decoder"


def test_over_time_budget_is_not_eligible_but_fast_enough_is():
    budget = sweep.TRAIN_BUDGET_S
    rows = [row(0.02, 0.0, budget + 1, name="slow"), row(0.06, 0.0, budget, name="at budget")]
    assert sweep.choose(rows, 0.0)["name"] == "at budget"


def test_nothing_within_budgets_falls_back_to_least_forgetting():
    rows = [row(0.02, 0.05, 50, name="a"), row(0.09, 0.03, 900, name="b")]
    assert sweep.choose(rows, 0.0)["name"] == "b"


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
