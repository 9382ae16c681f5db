"""The training loss, computed without holding the whole micro-batch's float32 logits.

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

Same loss as the models' own: mean cross-entropy in float32 over the positions whose label is not
`IGNORE_INDEX`, with the decoder input the labels shifted right behind the decoder start token
(`shift_right`, as both families' `forward` builds it when given only labels).
"""

from __future__ import annotations

import functools

from lora.families.base import IGNORE_INDEX

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


@functools.cache
def _chunked_cross_entropy_function():
    import torch  # deferred: heavy, and modules that import this one are imported by `lora --help`

    class ChunkedCrossEntropy(torch.autograd.Function):
        """Forward: the loss and, in the same pass, its gradient with respect to the logits, a chunk at a
        time in float32; only that gradient (in the logits' dtype, in the logits' own memory) is kept for the
        backward pass, and no float32 copy. The gradient of mean cross-entropy is (softmax - one-hot) / count at
        each counted position: what autograd computes from the float32 copy and casts back."""

        @staticmethod
        def forward(ctx, logits, labels, chunk_tokens: int):
            flat = logits.reshape(-1, logits.shape[-1])
            flat_labels = labels.reshape(-1)
            count = (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
            # The gradient is written over the logits, chunk by chunk, once each chunk's loss is read: the
            # logits are needed for nothing else (the vocabulary projection's backward keeps its input, not
            # its output), so a step holds one bf16 tensor of logits-size, not two.
            grad = flat.detach()
            total = torch.zeros((), dtype=torch.float32, device=logits.device)
            for start in range(0, flat.shape[0], chunk_tokens):
                part = flat[start:start + chunk_tokens].float()
                target = flat_labels[start:start + chunk_tokens]
                counted = target != IGNORE_INDEX
                index = target.clamp(min=0)[:, None]
                log_norm = torch.logsumexp(part, dim=-1)
                total += ((log_norm - part.gather(1, index)[:, 0]) * counted).sum()
                probs = part.sub_(log_norm[:, None]).exp_()  # softmax, in place of the float32 copy
                probs.scatter_add_(1, index, torch.full(index.shape, -1.0, dtype=probs.dtype, device=probs.device))
                grad[start:start + chunk_tokens] = probs.mul_((counted / count)[:, None])
            ctx.save_for_backward(grad)
            ctx.shape = logits.shape
            return total / count

        @staticmethod
        def backward(ctx, grad_output):
            (grad,) = ctx.saved_tensors
            return grad.mul_(grad_output.to(grad.dtype)).view(ctx.shape), None, None  # in place: used once

    return ChunkedCrossEntropy


def chunked_cross_entropy(logits, labels, chunk_tokens: int = CHUNK_TOKENS):
    """Mean float32 cross-entropy of `logits` (batch x positions x vocabulary, any float dtype) against
    `labels` (batch x positions, `IGNORE_INDEX` where none), `chunk_tokens` positions at a time.
    `logits` are overwritten with the loss's gradient: pass a tensor nothing else reads afterwards."""
    return _chunked_cross_entropy_function().apply(logits, labels, chunk_tokens)


def training_loss(model, batch: dict, config, chunk_tokens: int | None = None):
    """The loss of `model` (called as a whole, so DDP and accelerate's autocast wrap it as usual) on
    `batch`: its inputs plus "labels"; `config`: the model's config (decoder start and pad tokens);
    `chunk_tokens`: None for `CHUNK_TOKENS` on a CPU, `GPU_CHUNK_TOKENS` elsewhere."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels, config.decoder_start_token_id, config.pad_token_id)
    logits = model(**inputs).logits
    if chunk_tokens is None:
        chunk_tokens = CHUNK_TOKENS if logits.device.type == "cpu" else GPU_CHUNK_TOKENS
    return chunked_cross_entropy(logits, labels, chunk_tokens)
