"""`lora.lora_dropout`: LoRA's input dropout with its CPU mask drawn from numpy's SFC64 bits. The same
distribution as `nn.Dropout` (keep probability within 2**-17 of 1 - p, kept values scaled so the expectation
is the input), reproducible from torch's seed, `nn.Dropout` itself in eval mode and off the CPU, and swapped
in by `attach_lora` without changing what an adapter saves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora import lora_dropout
from lora.lora_dropout import FastMaskDropout, keep_mask, keep_threshold, use_fast_mask_dropout

N = 1_000_000


def test_keep_probability_is_one_minus_p_to_16_bits():
    for p in (0.05, 0.1, 0.5):
        assert abs(keep_threshold(p) / 2**16 - (1 - p)) <= 2**-17


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_mask_keeps_each_element_with_its_probability_at_every_position_of_the_random_words(p):
    torch.manual_seed(0)
    keep, kept = keep_mask((N,), p)
    assert kept == keep_threshold(p) / 2**16
    sigma = (kept * (1 - kept) / (N / 4)) ** 0.5
    for quarter in range(4):  # each 16-bit quarter of the 64-bit words is uniform (a biased top bit would show here)
        assert abs(keep[quarter::4].double().mean().item() - kept) < 6 * sigma, quarter


def test_output_is_zero_or_scaled_input_with_the_input_as_expectation():
    torch.manual_seed(1)
    dropout = FastMaskDropout(0.3).train()
    x = torch.ones(N)
    y = dropout(x)
    _, kept = keep_mask((1,), 0.3)
    assert set(torch.unique(y).tolist()) == pytest.approx([0.0, 1.0 / kept])
    assert y.double().mean().item() == pytest.approx(1.0, abs=6 * ((1 - kept) / kept / N) ** 0.5)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = FastMaskDropout(0.2).train()(x)
    g = torch.randn_like(y)
    y.backward(g)
    _, kept = keep_mask((1,), 0.2)
    kept_where = y != 0
    assert torch.allclose(x.grad, g * kept_where / kept)
    assert torch.allclose(y[kept_where], x.detach()[kept_where] / kept)


def test_reproducible_from_torch_seed_and_different_across_seeds():
    dropout = FastMaskDropout(0.1).train()
    x = torch.randn(4, 1000)
    torch.manual_seed(7)
    a = dropout(x)
    torch.manual_seed(7)
    b = dropout(x)
    torch.manual_seed(8)
    c = dropout(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_mode_p_zero_and_other_devices_are_nn_dropout(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the fast mask is for training on a CPU only")

    x = torch.randn(8, 16)
    assert torch.equal(FastMaskDropout(0.1).eval()(x), x)
    monkeypatch.setattr(lora_dropout, "keep_mask", never)
    assert torch.equal(FastMaskDropout(0.0).train()(x), x)
    meta = FastMaskDropout(0.1).train()(torch.empty(8, 16, device="meta"))  # any non-CPU device: torch's own dropout
    assert meta.device.type == "meta" and meta.shape == (8, 16)


def test_attach_lora_swaps_every_branch_and_saves_the_same_adapter(tiny_model_dir):
    from peft import get_peft_model_state_dict

    from lora.model_utils import attach_lora, load_base, resolve_model_id

    model, _, family = load_base(resolve_model_id(str(tiny_model_dir)))
    model = attach_lora(model, 4, 8, 0.05, family.default_target_modules)
    branches = [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
                for d in m.lora_dropout.values()]
    assert branches and all(type(d) is FastMaskDropout and d.p == 0.05 for d in branches)
    keys = sorted(get_peft_model_state_dict(model))
    assert keys and not any("dropout" in k for k in keys)
    assert use_fast_mask_dropout(model) == 0  # nothing left to swap

    plain, _, _ = load_base(resolve_model_id(str(tiny_model_dir)))
    plain = attach_lora(plain, 4, 8, 0.0, family.default_target_modules)  # p 0: PEFT's nn.Identity, left alone
    assert not any(isinstance(m, FastMaskDropout) for m in plain.modules())
    assert sorted(get_peft_model_state_dict(plain)) == keys


def test_compiled_it_is_torch_dropout_in_one_graph():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    dropout = FastMaskDropout(0.1).train()
    x = torch.ones(64, 64)
    y = torch.compile(dropout, backend="eager")(x)
    assert dict(counters["graph_break"]) == {} and counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))  # nn.Dropout's scale: torch's own mask, traced
