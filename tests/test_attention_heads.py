"""`lora.model_utils.pad_attention_heads`: Moonshine's attention heads zero-padded to a multiple of 8 (what CUDA's
memory-efficient SDPA kernel needs to take a padding mask) compute exactly what the unpadded heads do, loss and
LoRA gradients included; models without the option, or with aligned heads, are left as they are."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

from conftest import TINY_OVERRIDES, build_tiny_model  # tests/ is on the path under pytest
from lora import pipeline
from lora.families.moonshine.conv_stem import UnfoldedConv1d, unfold_first_convolution
from lora.model_utils import attach_lora, attention_head_padding, pad_attention_heads
from lora.training_config import TrainConfig


def _moonshine(moonshine_dir, hidden: int, heads: int):
    config = AutoConfig.from_pretrained(moonshine_dir)
    for key, value in dict(hidden_size=hidden, intermediate_size=2 * hidden, encoder_num_hidden_layers=2,
                           decoder_num_hidden_layers=2, encoder_num_attention_heads=heads, decoder_num_attention_heads=heads,
                           encoder_num_key_value_heads=heads, decoder_num_key_value_heads=heads).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_config(config, attn_implementation="sdpa")
    return attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def _padded_batch():
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(3, 16000 * 2, generator=g) * 0.1
    mask = torch.ones(3, audio.shape[1], dtype=torch.long)
    mask[1, 20000:] = 0  # clips of 2.0, 1.25 and 0.8 s: the encoder and cross-attention see a padding mask
    mask[2, 12800:] = 0
    audio = audio * mask
    labels = torch.randint(5, 1000, (3, 7), generator=g)
    labels[2, 4:] = -100
    return {"input_values": audio, "attention_mask": mask, "labels": labels}


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("hidden,heads,added", [(104, 2, 4), (72, 2, 4)])  # 52-wide heads (Moonshine base's), 36 (tiny's)
def test_padded_heads_compute_what_unpadded_ones_do(moonshine_dir, hidden, heads, added):
    model = _moonshine(moonshine_dir, hidden, heads).train()
    batch = _padded_batch()
    loss, grads = _loss_and_grads(model, batch)
    assert attention_head_padding(model) == 0
    assert pad_attention_heads(model) == added
    assert attention_head_padding(model) == added
    padded_loss, padded_grads = _loss_and_grads(model, batch)
    assert torch.allclose(padded_loss, loss, rtol=1e-5, atol=1e-6)
    assert padded_grads.keys() == grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(padded_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_padding_changes_what_sdpa_is_given(moonshine_dir, monkeypatch):
    """The padding reaches the attention kernel (the test above would pass if nothing were padded)."""
    model = _moonshine(moonshine_dir, 104, 2).eval()
    pad_attention_heads(model)
    widths = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        widths.append(query.shape[-1])
        return original(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model(**_padded_batch())
    assert widths and set(widths) == {56}


def test_aligned_or_unsupported_models_are_left_alone(tiny_moonshine, tiny_whisper):
    for path in (tiny_moonshine, tiny_whisper):  # 32-wide heads; Whisper has no head-dim padding option
        model = AutoModelForSpeechSeq2Seq.from_pretrained(path)
        assert pad_attention_heads(model) == 0
        assert attention_head_padding(model) == 0


def test_unfolded_first_convolution_computes_what_conv1d_does(moonshine_dir):
    model = _moonshine(moonshine_dir, 104, 2).eval()
    batch = _padded_batch()
    with torch.no_grad():
        before = model(**batch).logits
        keys = set(model.state_dict())
        assert unfold_first_convolution(model)
        assert isinstance(model.get_base_model().model.encoder.conv1, UnfoldedConv1d)
        assert not unfold_first_convolution(model)  # once only
        after = model(**batch).logits
    assert set(model.state_dict()) == keys  # the same weight under the same name
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    audio = batch["input_values"][:, None]
    conv = model.get_base_model().model.encoder.conv1
    with torch.no_grad():
        assert torch.allclose(conv(audio), torch.nn.functional.conv1d(audio, conv.weight, stride=64), atol=1e-6)


def test_a_cuda_run_loads_moonshine_with_padded_heads_and_a_cpu_run_without(moonshine_dir, tmp_path, monkeypatch):
    """`pipeline.load_model` pads on a CUDA session only (no GPU needed: the session's device is what it reads)."""
    monkeypatch.setitem(TINY_OVERRIDES, "moonshine", dict(TINY_OVERRIDES["moonshine"], hidden_size=104, intermediate_size=208))
    model_dir = build_tiny_model(moonshine_dir, tmp_path / "moonshine_52")  # 2 heads of 52
    cfg = TrainConfig(model_id=str(model_dir))
    for device, added in (("cuda", 4), ("cpu", 0)):
        accelerator = SimpleNamespace(device=torch.device(device), main_process_first=contextlib.nullcontext,
                                      local_main_process_first=contextlib.nullcontext)
        session = pipeline.Session(accelerator, "no", None, 0.0, device == "cpu")
        assert attention_head_padding(pipeline.load_model(cfg, session).model) == added, device
