"""The encoder cache of `train_lora` changes speed, not results: with LoRA on the decoder only, the
loss history with the cache equals the one without it (same seed), for both families; it stays off
whenever the encoder could differ between epochs (trainable encoder weights, dropout, SpecAugment)."""

from __future__ import annotations

import pytest

from lora.encoder_cache import EncoderCache, encoder_is_fixed


def _setup(model_dir, utterances, targets=None, seed=0):
    from accelerate.utils import set_seed

    from lora.data_loader import prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id

    set_seed(seed)
    model, processor, family = load_base(resolve_model_id(str(model_dir)))
    examples = prepare_dataset(utterances, processor, family)
    model = attach_lora(model, 4, 8, 0.1, targets or (family.attention_in("decoder"),))
    return model, family, examples


def _train(model_dir, utterances, cache: bool) -> tuple[list[float], int]:
    from accelerate import Accelerator

    from lora.data_loader import LoaderOptions
    from lora.training import example_source, train_lora
    from lora.training_config import TrainConfig

    model, family, examples = _setup(model_dir, utterances)
    cfg = TrainConfig(batch_size=2, gradient_accumulation_steps=2, max_steps=3, checkpoint_every=0, seed=0)
    source = example_source(examples, family, LoaderOptions(batch_size=2, seed=0))
    result = train_lora(model, family, source, cfg, Accelerator(gradient_accumulation_steps=2), show_progress=False,
                        cache_encoder=cache)
    return [row["loss"] for row in result.history], len(examples)


@pytest.fixture(scope="module")
def four_utterances(librispeech_utterances):
    return sorted(librispeech_utterances, key=lambda u: u.id)[:4]


def test_same_losses_with_and_without_cache(tiny_model_dir, four_utterances):
    cached, _ = _train(tiny_model_dir, four_utterances, cache=True)
    plain, _ = _train(tiny_model_dir, four_utterances, cache=False)
    assert cached == plain


def test_cache_reuses_batches(tiny_moonshine, four_utterances):
    from lora.data_loader import collate

    model, family, examples = _setup(tiny_moonshine, four_utterances)
    cache = EncoderCache(model, family.input_key)
    for _ in range(3):
        inputs = cache.model_inputs((0, 1), collate(examples[:2], family))
    assert cache.hits == 2 and set(inputs) == {"encoder_outputs", "labels"}


def test_cache_off_when_encoder_can_change(tiny_moonshine, tiny_whisper, four_utterances):
    model, family, _ = _setup(tiny_moonshine, four_utterances)
    assert encoder_is_fixed(model)
    model, family, _ = _setup(tiny_moonshine, four_utterances, targets=family.default_target_modules)
    assert not encoder_is_fixed(model)  # LoRA in the encoder: it changes every step
    model, family, _ = _setup(tiny_whisper, four_utterances)
    model.config.dropout = 0.1
    assert not encoder_is_fixed(model)
    model.config.dropout, model.config.apply_spec_augment = 0.0, True
    assert not encoder_is_fixed(model)
