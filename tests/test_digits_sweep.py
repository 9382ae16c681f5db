"""The digits sweep's selection rule (recipes/digits_sweep.py), on made-up result rows."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "recipes" / "digits_sweep.py"
_spec = importlib.util.spec_from_file_location("digits_sweep", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


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


_STYLE_PATH = Path(__file__).resolve().parents[1] / "recipes" / "style_audio.py"
_style_spec = importlib.util.spec_from_file_location("style_audio", _STYLE_PATH)
style_audio = importlib.util.module_from_spec(_style_spec)
_style_spec.loader.exec_module(style_audio)


def test_conversation_turns_become_clips_of_at_most_ten_seconds():
    """The pinned sample's reference (pyannote.audio 4.0.7 `sample.stm`, two lines shown) and the cut: turns
    are grouped while the clip stays within MAX_CLIP_S; a longer turn is a clip of its own, never split."""
    stm = ("sample 1 Diane 6.68 7.16 Hello?\n"
           "sample 1 Sheila 7.634 8.155 Hello?\n"
           "not a turn\n")
    assert style_audio.read_turns(stm) == [(6.68, 7.16), (7.634, 8.155)]
    turns = [(0.0, 4.0), (4.5, 9.0), (9.5, 12.0), (12.0, 30.0), (30.5, 31.0)]
    assert style_audio.clips_from_turns(turns, 10.0) == [(0.0, 9.0), (9.5, 12.0), (12.0, 30.0), (30.5, 31.0)]
