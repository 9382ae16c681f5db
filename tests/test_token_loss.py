"""The chunked training loss (lora.token_loss) is the models' own loss, value and gradients."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSpeechSeq2Seq

from lora.families.base import IGNORE_INDEX
from lora.token_loss import (
    chunked_cross_entropy,
    chunked_projected_cross_entropy,
    frozen_projection,
    hidden_states_out,
    shift_right,
    training_loss,
)


def _batch(model, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(5, 200, (3, 7), generator=g)
    labels[0, 5:] = IGNORE_INDEX  # padded label rows, as the collator writes them
    labels[2, 2:] = IGNORE_INDEX
    if model.config.model_type == "whisper":
        audio = {"input_features": torch.randn(3, model.config.num_mel_bins, 3000, generator=g)}
    else:
        audio = {"input_values": torch.randn(3, 8000, generator=g) * 0.1, "attention_mask": torch.ones(3, 8000, dtype=torch.long)}
    return {**audio, "labels": labels}


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk", [1, 4, 128])
@pytest.mark.parametrize("head", ["frozen", "trained"])
def test_same_loss_and_gradients_as_the_models_own(tiny_model_dir, chunk, head):
    """A frozen projection (LoRA's case) is computed a chunk at a time inside the loss; a trained one runs
    whole and only the loss is chunked. Either way: the model's own loss and gradients."""
    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    model.train()
    model.get_output_embeddings().weight.requires_grad_(head == "trained")
    assert (frozen_projection(model) is None) == (head == "trained")
    torch.manual_seed(0)
    for module in model.modules():  # the same forward twice: no dropout draws between them
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _batch(model)
    theirs = model(**batch).loss
    theirs.backward()
    their_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    ours = training_loss(model, model, batch, chunk_tokens=chunk)
    ours.backward()
    our_grads = _grads(model)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (float(ours), float(theirs))
    assert our_grads.keys() == their_grads.keys() and len(our_grads) > 10
    for name, grad in our_grads.items():
        assert torch.allclose(grad, their_grads[name], rtol=1e-4, atol=1e-6), name
    assert type(model.get_output_embeddings()) is torch.nn.Linear  # the projection is back


def test_bf16_autocast_projection_matches_the_layers_own(tiny_model_dir):
    """Under bf16 autocast the chunked projection computes what the layer would: bf16 logits scored in
    float32, and bf16 gradients into the float32 hidden states."""
    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    model.get_output_embeddings().weight.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 9, model.get_output_embeddings().in_features, generator=g)
    labels = torch.randint(0, model.config.vocab_size, (2, 9), generator=g)
    labels[1, 6:] = IGNORE_INDEX
    theirs_in, ours_in = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.get_output_embeddings()(theirs_in)
        with hidden_states_out(model):
            projected_in = model.get_output_embeddings()(ours_in)
    assert logits.dtype == projected_in.dtype == torch.bfloat16
    theirs = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=IGNORE_INDEX)
    theirs.backward()
    ours = chunked_projected_cross_entropy(projected_in, frozen_projection(model), labels, chunk_tokens=4)
    ours.backward()
    assert torch.allclose(ours, theirs, rtol=1e-5), (float(ours), float(theirs))
    assert torch.allclose(ours_in.grad, theirs_in.grad, rtol=1e-2, atol=1e-6)


def test_shift_right_is_the_families_own():
    from transformers.models.moonshine.modeling_moonshine import shift_tokens_right as moonshine_shift
    from transformers.models.whisper.modeling_whisper import shift_tokens_right as whisper_shift

    labels = torch.tensor([[11, 12, 13, IGNORE_INDEX], [21, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    ours = shift_right(labels, decoder_start_token_id=1, pad_token_id=0)
    assert ours.tolist() == [[1, 11, 12, 13], [1, 21, 0, 0]]
    assert torch.equal(ours, moonshine_shift(labels, 0, 1)) and torch.equal(ours, whisper_shift(labels, 0, 1))


def test_bf16_logits_are_scored_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 300, generator=g).to(torch.bfloat16)
    labels = torch.randint(0, 300, (2, 5), generator=g)
    labels[1, 3:] = IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 300), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    got = chunked_cross_entropy(logits, labels, chunk_tokens=3)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, rtol=1e-6)


PEAK_PROBE = """
import sys, torch
from lora.token_loss import chunked_cross_entropy, chunked_projected_cross_entropy
vocab, tokens, hidden = 32768, 2048, 64
g = torch.Generator().manual_seed(2)
head = torch.nn.Linear(hidden, vocab, bias=False).to(torch.bfloat16).requires_grad_(False)
states = torch.randn(1, tokens, hidden, generator=g).to(torch.bfloat16).requires_grad_()
labels = torch.randint(0, vocab, (1, tokens), generator=g)
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))
open("/proc/self/clear_refs", "w").write("5")  # peak RSS (VmHWM) starts again from the current RSS
before = status("VmRSS")
if sys.argv[1] == "projected":
    loss = chunked_projected_cross_entropy(states, head.weight, labels)
    loss.backward()
    print((status("VmHWM") - before) / 1024)
    sys.exit()
logits = head(states)
if sys.argv[1] == "chunked":
    loss = chunked_cross_entropy(logits, labels)
else:
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), labels.reshape(-1))
loss.backward()
print((status("VmHWM") - before) / 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux's peak-RSS reset")
def test_a_step_of_many_label_tokens_peaks_lower():
    """The point of the chunking: the float32 copies of all the logits never exist at once. One forward and
    backward of a 32,768-word vocabulary projection over 2,048 label positions, each side in a fresh
    interpreter (peak RSS rise): bf16 logits 128 MB, their float32 copy and log-softmax 256 MB each.
    The projection a chunk at a time too keeps no logits-sized tensor at all.
    Measured on the 2-core dev machine: 906 MB whole, 221 MB chunked, 86 MB projected a chunk at a time."""
    import lora

    env = dict(os.environ, PYTHONPATH=str(Path(lora.__file__).resolve().parents[1]))
    rise = {side: float(subprocess.run([sys.executable, "-c", PEAK_PROBE, side], env=env, capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for side in ("whole", "chunked", "projected")}
    assert rise["chunked"] < 0.6 * rise["whole"], rise
    assert rise["projected"] < 0.6 * rise["chunked"], rise


def test_a_compiled_model_is_not_recompiled_at_each_step(tiny_model_dir):
    """The projection's stand-in is one object per dtype: `torch.compile` guards on the modules it traced,
    so a new stand-in at every call would recompile the model at every training step."""
    import torch._dynamo

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    model.get_output_embeddings().weight.requires_grad_(False)
    compiled = torch.compile(model, backend="eager")
    batch = _batch(model)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    for _ in range(3):
        training_loss(compiled, model, batch).backward()
    assert counters["stats"]["unique_graphs"] >= 1
    frames = counters["stats"]["unique_graphs"]
    training_loss(compiled, model, batch).backward()
    assert counters["stats"]["unique_graphs"] == frames, dict(counters["stats"])
