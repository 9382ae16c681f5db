"""Split micro-batches (`--split-micro-batches`): each utterance runs unpadded on its own, and the
token-weighted gradients add up to the padded micro-batch's. Whisper's input is 30 s either way, so
there the two must train the same weights; Moonshine's split run computes on no padding at all."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from lora.errors import UserError
from lora.families import MOONSHINE, WHISPER
from lora.training import _pieces, split_micro_batches


def _train(model_dir, utterances, split: str, steps: int = 2):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import train_lora
    from lora.training_config import TrainConfig

    set_seed(0)
    model, processor, family = load_base(resolve_model_id(str(model_dir)))
    examples = prepare_dataset(utterances, processor, family)
    model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    cfg = TrainConfig(batch_size=3, gradient_accumulation_steps=1, max_steps=steps, checkpoint_every=0, seed=0,
                      split_micro_batches=split, mixed_precision="no")
    result = train_lora(model, family, examples, cfg, Accelerator(), show_progress=False)
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return result, weights


@pytest.fixture(scope="module")
def six_utterances(librispeech_utterances):
    return sorted(librispeech_utterances, key=lambda u: u.id)[:6]


def test_split_trains_the_same_weights_when_padding_changes_nothing(tiny_whisper, six_utterances):
    import torch

    split, split_weights = _train(tiny_whisper, six_utterances, "yes")
    padded, padded_weights = _train(tiny_whisper, six_utterances, "no")
    assert [r["loss"] for r in split.history] == pytest.approx([r["loss"] for r in padded.history], rel=1e-4)
    for name, weight in padded_weights.items():
        assert torch.allclose(split_weights[name], weight, atol=1e-5), name


def test_split_moonshine_computes_on_less_padding(tiny_moonshine, six_utterances):
    split, _ = _train(tiny_moonshine, six_utterances, "yes")
    padded, _ = _train(tiny_moonshine, six_utterances, "no")
    assert split.audio_seconds == pytest.approx(padded.audio_seconds)
    assert split.computed_audio_seconds == pytest.approx(split.audio_seconds)  # every micro-batch split
    assert padded.computed_audio_seconds > 1.1 * padded.audio_seconds
    assert all(math.isfinite(row["loss"]) for row in split.history)


def test_only_micro_batches_with_enough_padding_are_split():
    clips = lambda *seconds: [SimpleNamespace(seconds=s) for s in seconds]  # noqa: E731
    assert len(_pieces(clips(2.0, 4.0, 9.0), split=True)) == 3
    assert len(_pieces(clips(0.50, 0.52, 0.55), split=True)) == 1  # under SPLIT_MIN_PADDING: one padded call
    assert len(_pieces(clips(2.0, 9.0), split=False)) == 1
    assert len(_pieces(clips(9.0), split=True)) == 1


def _accelerator(device: str, processes: int):
    return SimpleNamespace(device=SimpleNamespace(type=device), num_processes=processes)


def test_auto_splits_only_a_single_cpu_process_with_variable_length_input():
    assert split_micro_batches("auto", MOONSHINE, _accelerator("cpu", 1))
    assert not split_micro_batches("auto", WHISPER, _accelerator("cpu", 1))  # 30 s either way
    assert not split_micro_batches("auto", MOONSHINE, _accelerator("cuda", 1))  # batching feeds the GPU
    assert not split_micro_batches("auto", MOONSHINE, _accelerator("cpu", 2))  # one all-reduce per step
    assert split_micro_batches("yes", WHISPER, _accelerator("cuda", 1))
    assert not split_micro_batches("no", MOONSHINE, _accelerator("cpu", 1))


@pytest.mark.parametrize("setting,processes,message", [("yes", 2, "single process"), ("sometimes", 1, "expected auto")])
def test_bad_settings_are_one_clear_error(setting, processes, message):
    with pytest.raises(UserError, match=message):
        split_micro_batches(setting, MOONSHINE, _accelerator("cpu", processes))
