"""`lora.model_utils.float32_attention_on_cpu`: under bf16 autocast on a CPU the attention runs in float32 (SDPA's
bf16 CPU kernels are the slower ones), between bf16 projections; float32 runs are untouched, bit for bit, and
`train_lora` switches a model only when it trains in bf16 on a CPU. Tiny random models from the real configs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSpeechSeq2Seq

from lora import pipeline
from lora.data_loader import LoaderOptions, collate, prepare_dataset
from lora.model_utils import FLOAT32_ATTENTION, FLOAT32_MAX_KEYS, attach_lora, float32_attention_on_cpu, load_base, resolve_model_id
from lora.training import example_source, train_lora
from lora.training_config import TrainConfig


@pytest.fixture(params=["moonshine", "whisper"])
def tiny(request, tiny_moonshine, tiny_whisper):
    return tiny_moonshine if request.param == "moonshine" else tiny_whisper


def _batch(model_dir, utterances):
    _, processor, family = load_base(resolve_model_id(str(model_dir)))
    return collate(prepare_dataset(utterances[:3], processor, family), family)  # clips of three lengths: padding masks


def _loss_and_grads(model, batch, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}


def _model(model_dir):
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir, attn_implementation="sdpa")
    model = attach_lora(model, 4, 8, 0.0, ("q_proj", "k_proj", "v_proj", "out_proj", "o_proj"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B: the gradients of A depend on the attention's output
            torch.nn.init.normal_(p, std=0.02)
    return model.train()


def test_float32_runs_are_unchanged_bit_for_bit(tiny, librispeech_utterances):
    batch = _batch(tiny, librispeech_utterances)
    model = _model(tiny)
    loss, grads = _loss_and_grads(model, batch, bf16=False)
    assert float32_attention_on_cpu(model)
    assert model.get_base_model().config._attn_implementation == FLOAT32_ATTENTION
    same_loss, same_grads = _loss_and_grads(model, batch, bf16=False)
    assert torch.equal(same_loss, loss) and all(torch.equal(same_grads[k], grads[k]) for k in grads)


def test_under_bf16_autocast_the_attention_is_float32_and_the_loss_stays_put(tiny, librispeech_utterances, monkeypatch):
    batch = _batch(tiny, librispeech_utterances)
    model = _model(tiny)
    exact, _ = _loss_and_grads(model, batch, bf16=False)
    plain, _ = _loss_and_grads(model, batch, bf16=True)
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, *args, **kwargs):  # (keys, the dtype SDPA computes in: autocast's (bf16) while it is on)
        seen.append((key.shape[-2], torch.bfloat16 if torch.is_autocast_enabled("cpu") else query.dtype))
        return sdpa(query, key, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    _loss_and_grads(model, batch, bf16=True)
    assert seen and {dtype for _, dtype in seen} == {torch.bfloat16}  # before: autocast hands SDPA bf16
    seen.clear()
    assert float32_attention_on_cpu(model)
    switched, grads = _loss_and_grads(model, batch, bf16=True)
    assert any(keys <= FLOAT32_MAX_KEYS for keys, _ in seen)  # the decoder's self-attention at least
    # float32 up to FLOAT32_MAX_KEYS keys; longer (Whisper's 1,500 encoder frames) as before
    assert all(dtype == (torch.float32 if keys <= FLOAT32_MAX_KEYS else torch.bfloat16) for keys, dtype in seen)
    # bf16 projections either way: the loss moves by bf16 rounding, no more (and is no further from float32's)
    assert torch.allclose(switched, exact, rtol=2e-2) and abs(switched - exact) <= abs(plain - exact) + 2e-2 * abs(exact)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_train_lora_switches_only_for_bf16_on_a_cpu(tiny_moonshine, librispeech_utterances):
    model, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    examples = prepare_dataset(librispeech_utterances[:2], processor, family)
    cfg = TrainConfig(max_steps=1, batch_size=2, gradient_accumulation_steps=1, checkpoint_every=0)
    peft_model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    for precision, expected in (("no", "sdpa"), ("bf16", FLOAT32_ATTENTION)):  # the same model: fp32 first, then bf16
        session = pipeline.start(TrainConfig(mixed_precision=precision), cpu=True)
        train_lora(peft_model, family, example_source(examples, family, LoaderOptions(2)), cfg, session.accelerator,
                   show_progress=False)
        assert peft_model.get_base_model().config._attn_implementation == expected
