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


def _lora_model(tiny_model_dir, head: str = "frozen"):
    """The tiny model with LoRA on every attention projection, its B matrices non-zero (so the adapters change the
    outputs, as after a few steps), dropout off; the vocabulary projection frozen or trained."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.2
    model.get_output_embeddings().weight.requires_grad_(head == "trained")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    return model


def _reference_distillation(model, batch, rows, weight):
    """The model's own loss plus `weight` x KL(base || tuned), written with plain autograd (the base: adapters off)."""
    labels = batch["labels"]
    inputs = {k: v[rows] for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels[rows], model.config.decoder_start_token_id, model.config.pad_token_id)
    with torch.no_grad(), model.disable_adapter():
        teacher = model(**inputs).logits
    student = model(**inputs).logits
    counted = labels[rows] != IGNORE_INDEX
    p = torch.softmax(teacher[counted].float(), -1)
    kl = (p * (p.log() - torch.log_softmax(student[counted].float(), -1))).sum(-1).mean()
    return model(**batch).loss + weight * kl, kl


@pytest.mark.parametrize("head", ["frozen", "trained"])
def test_distillation_to_base_adds_the_kl_on_the_chosen_rows(tiny_model_dir, head):
    """On the rows marked for it, the loss gains weight x mean KL(base model || tuned model) over their label
    positions, the base being the same model with its adapters off: value and gradients as plain autograd gives."""
    model = _lora_model(tiny_model_dir, head)
    batch = _batch(model)
    rows = torch.tensor([True, False, True])
    theirs, kl = _reference_distillation(model, batch, rows, 2.0)
    assert float(kl.detach()) > 1e-4  # the adapters do change the distributions: the term is not vacuous
    theirs.backward()
    their_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    ours = training_loss(model, model, batch, chunk_tokens=4, base_rows=rows, base_weight=2.0)
    ours.backward()
    our_grads = _grads(model)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (float(ours), float(theirs))
    assert our_grads.keys() == their_grads.keys() and any("lora_B" in n for n in our_grads)
    for name, grad in our_grads.items():
        assert torch.allclose(grad, their_grads[name], rtol=1e-4, atol=1e-6), name
    # without marked rows (or weight 0) it is the plain loss
    plain = training_loss(model, model, batch, chunk_tokens=4)
    assert torch.allclose(training_loss(model, model, batch, chunk_tokens=4, base_rows=torch.zeros(3, dtype=torch.bool),
                                        base_weight=2.0), plain)
    assert torch.allclose(training_loss(model, model, batch, chunk_tokens=4, base_rows=rows, base_weight=0.0), plain)
    assert torch.allclose(ours - plain, 2.0 * kl, rtol=1e-4, atol=1e-6)


def test_distillation_to_base_is_zero_while_the_adapters_do_nothing(tiny_model_dir):
    """Fresh LoRA (B = 0) leaves the model the base model: the KL term is 0 and the loss the plain one."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _batch(model)
    rows = torch.tensor([False, True, True])
    plain = training_loss(model, model, batch)
    assert torch.allclose(training_loss(model, model, batch, base_rows=rows, base_weight=5.0), plain, atol=1e-6)


def test_distillation_needs_a_peft_model(tiny_model_dir):
    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    batch = _batch(model)
    with pytest.raises(ValueError, match="needs a PEFT model"):
        training_loss(model, model, batch, base_rows=torch.tensor([True, False, False]), base_weight=1.0)


def _train_distilled(model_dir, utterances, weight: float, cache: bool, marked=(False, True, False, True)):
    import numpy as np
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import LoaderOptions, prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import example_source, train_lora
    from lora.training_config import TrainConfig

    set_seed(0)
    model, processor, family = load_base(resolve_model_id(str(model_dir)))
    examples = prepare_dataset(utterances, processor, family)
    model = attach_lora(model, 4, 8, 0.0, (family.attention_in("decoder"),))
    cfg = TrainConfig(batch_size=2, gradient_accumulation_steps=1, max_steps=4, checkpoint_every=0, seed=0,
                      learning_rate=1e-2, replay_distillation=weight)  # 2 batches an epoch: each is met twice
    source = example_source(examples, family, LoaderOptions(batch_size=2, seed=0))
    if marked is not None:
        source.base_rows = np.array(marked, dtype=bool)
    result = train_lora(model, family, source, cfg, Accelerator(cpu=True), show_progress=False, cache_encoder=cache)
    return [row["loss"] for row in result.history]


def test_train_lora_distils_the_replay_rows(tiny_model_dir, librispeech_utterances):
    """`--replay-distillation` in the training loop: the first step is the plain one (fresh adapters are the base
    model), later steps add the KL on the marked rows; with the frozen encoder's outputs cached (decoder LoRA) the
    rows are taken from `encoder_outputs`, with the same losses as without the cache; a source that does not say
    which rows are replay is refused."""
    four = sorted(librispeech_utterances, key=lambda u: u.id)[:4]
    distilled = _train_distilled(tiny_model_dir, four, 1.0, cache=True)
    assert distilled == _train_distilled(tiny_model_dir, four, 1.0, cache=False)
    plain = _train_distilled(tiny_model_dir, four, 0.0, cache=True)
    # until the first step that adds a positive KL, both runs hold the same weights (the KL's gradient is 0 where
    # the model is the base), so that step's loss is the plain one plus the KL term, which is never negative
    first = next(i for i, (d, p) in enumerate(zip(distilled, plain, strict=True)) if d != p)
    assert first >= 1 and distilled[first] > plain[first]
    with pytest.raises(ValueError, match="base_rows"):
        _train_distilled(tiny_model_dir, four, 1.0, cache=False, marked=None)
