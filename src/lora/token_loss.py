"""The training loss, computed without holding the micro-batch's logits.

Why by hand: both families' `forward(labels=...)` upcast the logits of every label position to float32
and keep the float32 log-softmax for the backward pass (transformers' `ForCausalLMLoss` for Moonshine,
`CrossEntropyLoss` under autocast for Whisper). That is about 14 bytes per vocabulary entry per label
token, and a micro-batch's label tokens vary tenfold under a cap on seconds of audio (250 clips of a
quarter second against 7 clips of 8 s): measured on Moonshine base (vocabulary 32,768), one step on
250 clips x 4 tokens peaked 430 MB above the same clips with 1 token each, and those batches set the
peak of a scale run whenever the run drew one (benchmarks/results/logits_peak.md). Here the model
returns its (bf16 under autocast) logits, and the cross-entropy and its gradient are computed together
over chunks of `CHUNK_TOKENS` positions in float32: each chunk's float32 copy lives only while that chunk
is computed, and the gradient, in the logits' dtype, is written over the logits themselves (nothing else
needs them), so one logits-sized bf16 tensor is all a step keeps.

Where the vocabulary projection is a plain frozen linear layer (both families' tied `proj_out`, unless a
user's LoRA targets it), even that tensor never exists: for the training call the projection is stood in
for by `HiddenStatesHead`, which hands out the decoder's last hidden states (in the dtype the projection
would have run in), and the loss projects a chunk of positions at a time and writes the gradient with
respect to the hidden states in the same pass (the fused linear cross-entropy of Liger-Kernel and Apple's
Cut Cross-Entropy, written here in PyTorch for the CPU: neither library runs there). Then a step keeps
hidden-size tensors only, and its peak no longer grows with the vocabulary per label token.

Same loss as the models' own: mean cross-entropy in float32 over the positions whose label is not
`IGNORE_INDEX`, with the decoder input the labels shifted right behind the decoder start token
(`shift_right`, as both families' `forward` builds it when given only labels).
"""

from __future__ import annotations

import contextlib
import functools

from lora.families.base import IGNORE_INDEX
from lora.model_utils import base_model_view

CHUNK_TOKENS = 128  # positions per float32 chunk on a CPU: 128 x 51,865 (Whisper's vocabulary) x 4 B = 27 MB
# On a GPU memory is rarely what runs out and every chunk is a few more kernel launches, so a micro-batch's
# positions mostly fit one chunk there (not measured on a GPU yet: no machine was lent since this was written).
GPU_CHUNK_TOKENS = 8192


def shift_right(labels, decoder_start_token_id: int, pad_token_id: int):
    """The decoder's input for `labels`: start token first, labels moved one right, ignored positions
    as padding (transformers' `shift_tokens_right`, which each family's module defines for itself)."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == IGNORE_INDEX, pad_token_id)


def _chunk_loss_and_grad(logits, target, count):
    """The summed float32 cross-entropy of one chunk of `logits` (positions x vocabulary) against `target`
    and its gradient of the mean over `count` positions, (softmax - one-hot) / count at each counted
    position, in float32 (in place of the float32 copy): what autograd computes from a float32 copy."""
    import torch  # deferred: heavy, and modules that import this one are imported by `lora --help`

    part = logits.float()
    counted = target != IGNORE_INDEX
    index = target.clamp(min=0)[:, None]
    log_norm = torch.logsumexp(part, dim=-1)
    loss = ((log_norm - part.gather(1, index)[:, 0]) * counted).sum()
    probs = part.sub_(log_norm[:, None]).exp_()  # softmax, in place of the float32 copy
    probs.scatter_add_(1, index, torch.full(index.shape, -1.0, dtype=probs.dtype, device=probs.device))
    return loss, probs.mul_((counted / count)[:, None])


@functools.cache
def _chunked_cross_entropy_function():
    import torch  # deferred: see _chunk_loss_and_grad

    class ChunkedCrossEntropy(torch.autograd.Function):
        """Forward: the loss and, in the same pass, its gradient, a chunk of positions at a time in float32;
        only that gradient is kept for the backward pass, and no float32 copy. The gradient of mean
        cross-entropy with respect to the logits is (softmax - one-hot) / count at each counted position:
        what autograd computes from the float32 copy and casts back.

        `weight` None: `inputs` are the logits, and the gradient is written over them (in their dtype, in
        their memory: the vocabulary projection's backward keeps its input, not its output, so nothing else
        reads them), so a step holds one logits-sized tensor, not two.
        `weight` given (vocabulary x width, frozen: the caller checks, no gradient for it): `inputs` are the
        hidden states the projection would have read, each chunk's logits are `inputs @ weight.T` in their
        dtype (as the layer computes them), and what is kept is the gradient with respect to the hidden
        states (logits gradient @ weight, what the projection's backward computes): hidden-size, no logits."""

        @staticmethod
        def forward(ctx, inputs, weight, labels, chunk_tokens: int):
            flat = inputs.reshape(-1, inputs.shape[-1])
            flat_labels = labels.reshape(-1)
            count = (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
            w = None if weight is None else weight.to(inputs.dtype)  # once per step, as autocast casts a frozen weight each call
            grad = flat.detach() if w is None else torch.empty_like(flat)
            total = torch.zeros((), dtype=torch.float32, device=inputs.device)
            for start in range(0, flat.shape[0], chunk_tokens):
                part, target = flat[start:start + chunk_tokens], flat_labels[start:start + chunk_tokens]
                if w is None:
                    loss, grad[start:start + chunk_tokens] = _chunk_loss_and_grad(part, target, count)
                else:
                    loss, logits_grad = _chunk_loss_and_grad(part @ w.T, target, count)
                    grad[start:start + chunk_tokens] = logits_grad.to(w.dtype) @ w
                total += loss
            ctx.save_for_backward(grad)
            ctx.shape = inputs.shape
            return total / count

        @staticmethod
        def backward(ctx, grad_output):
            (grad,) = ctx.saved_tensors
            return grad.mul_(grad_output.to(grad.dtype)).view(ctx.shape), None, None, None  # in place: used once

    return ChunkedCrossEntropy


@functools.cache
def _hidden_states_head(weight_dtype):
    """One stand-in per weight dtype, the same object at every call: `torch.compile` guards on the modules it
    traced, and a new one per step would recompile the model at every step."""
    import torch  # deferred: see _chunk_loss_and_grad

    class HiddenStatesHead(torch.nn.Module):
        """Stands in for a vocabulary projection during one training call: returns its input (the decoder's
        last hidden states) cast to the dtype the projection would have computed in, autocast's when it is
        on, so `chunked_projected_cross_entropy` projects them in the layer's own dtype (the same values to float
        rounding: a chunk's matmul may sum in another order than the whole one)."""

        def __init__(self, weight_dtype):
            super().__init__()
            self.weight_dtype = weight_dtype

        def forward(self, hidden):
            kind = hidden.device.type
            if torch.is_autocast_enabled(kind):
                return hidden.to(torch.get_autocast_dtype(kind))
            return hidden.to(torch.promote_types(hidden.dtype, self.weight_dtype))

    return HiddenStatesHead(weight_dtype)


def frozen_projection(model):
    """The weight of `model`'s vocabulary projection when it is a plain bias-free linear layer nobody trains
    (so the loss may compute it a chunk at a time), else None (the projection then runs whole)."""
    import torch  # deferred: see _chunk_loss_and_grad

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    return head.weight


@contextlib.contextmanager
def hidden_states_out(model):
    """Within the block, `model`'s forward returns as "logits" the hidden states its vocabulary projection
    would have projected (see `HiddenStatesHead`); the projection is put back on leaving, error or not."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(_hidden_states_head(head.weight.dtype))
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def chunked_projected_cross_entropy(hidden, weight, labels, chunk_tokens: int = CHUNK_TOKENS):
    """Mean float32 cross-entropy of the logits `hidden @ weight.T` (hidden: batch x positions x width, the
    logits' dtype; weight: vocabulary x width, frozen) against `labels`, `chunk_tokens` positions at a time:
    no tensor of all the logits is ever made."""
    return _chunked_cross_entropy_function().apply(hidden, weight, labels, chunk_tokens)


def chunked_cross_entropy(logits, labels, chunk_tokens: int = CHUNK_TOKENS):
    """Mean float32 cross-entropy of `logits` (batch x positions x vocabulary, any float dtype) against
    `labels` (batch x positions, `IGNORE_INDEX` where none), `chunk_tokens` positions at a time.
    `logits` are overwritten with the loss's gradient: pass a tensor nothing else reads afterwards."""
    return _chunked_cross_entropy_function().apply(logits, None, labels, chunk_tokens)


def training_loss(model, bare, batch: dict, chunk_tokens: int | None = None, base_rows=None, base_weight: float = 0.0):
    """The loss of `model` (called as a whole, so DDP and accelerate's autocast wrap it as usual) on
    `batch`: its inputs plus "labels". `bare`: the model unwrapped (its config gives the decoder's start and
    pad tokens, its output embeddings the projection); `chunk_tokens`: None for `CHUNK_TOKENS` on a CPU,
    `GPU_CHUNK_TOKENS` elsewhere.

    `base_rows` (a boolean tensor over the batch's rows, or None) and `base_weight` > 0: plus `base_weight` x
    `distillation_to_base` on those rows (replay clips), which keeps the model's token distributions there
    those of the base model."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels, bare.config.decoder_start_token_id, bare.config.pad_token_id)
    distil = base_rows is not None and base_weight > 0 and bool(base_rows.any())
    weight = frozen_projection(bare)
    if weight is None:  # a trained projection: whole logits, loss still a chunk at a time
        logits = model(**inputs).logits
        # the rows' logits copied out before the loss writes its gradient over `logits`
        kept = logits[base_rows] if distil else None
        loss = chunked_cross_entropy(logits, labels, _chunk_tokens(chunk_tokens, logits.device))
    else:
        with hidden_states_out(bare):
            hidden = model(**inputs).logits
        kept = hidden[base_rows] @ weight.to(hidden.dtype).T if distil else None  # as the layer projects them
        loss = chunked_projected_cross_entropy(hidden, weight, labels, _chunk_tokens(chunk_tokens, hidden.device))
    if not distil:
        return loss
    return loss + base_weight * distillation_to_base(model, bare, _take_rows(inputs, base_rows), labels[base_rows], kept)


def distillation_to_base(model, bare, inputs: dict, labels, student_logits):
    """Mean KL(base || tuned) of the next-token distributions over the label positions of `inputs` (teacher
    forcing on the targets), the base model being `model` with its LoRA adapters switched off (PEFT's
    `disable_adapter`: no second copy of the weights). Learning-without-forgetting (Li & Hoiem, 2016) on the
    replay clips: their cross-entropy teaches the target's one token per position, this term the base model's
    whole distribution (how likely a comma or a capital was where the target has none), which is what a model
    tuned on unpunctuated one-word clips drifts away from. `student_logits`: the tuned model's logits for
    these rows (positions x vocabulary per row, any float dtype); float32 here."""
    import torch  # deferred: see _chunk_loss_and_grad

    with torch.no_grad(), base_model_view(bare):  # a ValueError where `bare` is not a PEFT model
        teacher_logits = model(**inputs).logits
    counted = labels != IGNORE_INDEX
    teacher = torch.log_softmax(teacher_logits[counted].float(), dim=-1)
    student = torch.log_softmax(student_logits[counted].float(), dim=-1)
    if student.shape[0] == 0:
        return student.sum()  # zero, still attached to the graph
    return torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")


def _take_rows(inputs: dict, rows) -> dict:
    """The model inputs of the batch rows where `rows` is true: tensors indexed on their first dimension, model
    outputs (cached `encoder_outputs`) field by field."""
    import torch  # deferred: see _chunk_loss_and_grad

    def take(value):
        if isinstance(value, torch.Tensor):
            return value[rows]
        if hasattr(value, "items"):  # a transformers ModelOutput: same class, each tensor field indexed
            return type(value)(**{k: take(v) for k, v in value.items()})
        if isinstance(value, tuple):
            return tuple(take(v) for v in value)
        return value

    return {k: take(v) for k, v in inputs.items()}


def _chunk_tokens(chunk_tokens: int | None, device) -> int:
    if chunk_tokens is not None:
        return chunk_tokens
    return CHUNK_TOKENS if device.type == "cpu" else GPU_CHUNK_TOKENS
