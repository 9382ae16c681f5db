"""Batched greedy transcription with a decode-length cap from audio length.

Batches are grouped by length so padding stays small, and `max_new_tokens` comes from the longest
clip of each batch (the family's tokens-per-second cap): Moonshine otherwise runs away on silence.
Inside that cap the loop guard (`lora.loop_guard`) ends a row whose tokens repeat more often than its
own audio length allows (EOS forced, `LoopGuardLogitsProcessor`), and `trim_loops` keeps one copy of a
looping word n-gram in the decoded text.
"""

from __future__ import annotations

import logging

from lora.data_loader import Example, collate, length_grouped_batches
from lora.evaluation import score
from lora.loop_guard import LoopGuardLogitsProcessor, trim_loops

log = logging.getLogger("lora")


def _bar(total: int, desc: str, shown: bool = True):
    """A tqdm bar over `total` utterances, shown only while info logging is on (off under --quiet)."""
    from tqdm.auto import tqdm  # deferred: tqdm.auto probes for notebooks; --help must stay fast

    return tqdm(total=total, desc=desc, unit="utt", leave=False, disable=not (shown and log.isEnabledFor(logging.INFO)))


def transcribe_examples(model, processor, family, examples: list[Example], batch_size: int = 8,
                        loop_guard: bool = True, progress: bool = True) -> list[str]:
    """Greedy hypotheses for `examples`, returned in the order given. `loop_guard=False` decodes as a
    plain `generate` does (to compare with tools that have no guard, e.g. transformers' pipeline).
    `progress=False`: no bar (inside the training loop's own)."""
    import torch
    from transformers import LogitsProcessorList  # deferred: heavy

    device = next(model.parameters()).device
    eos = processor.tokenizer.eos_token_id
    hyps: list[str] = [""] * len(examples)
    with torch.inference_mode(), _bar(len(examples), "transcribe", progress) as bar:
        for idx in length_grouped_batches(examples, batch_size):
            batch = [examples[i] for i in idx]
            inputs = {k: v.to(device) for k, v in family.pad_inputs([e.inputs for e in batch]).items()}
            kwargs = family.generate_kwargs(max(e.seconds for e in batch))
            guards = [LoopGuardLogitsProcessor([examples[i].seconds for i in idx], eos)] if loop_guard else []
            out = model.generate(**inputs, **kwargs, logits_processor=LogitsProcessorList(guards))
            texts = processor.tokenizer.batch_decode(out, skip_special_tokens=True)
            for i, text in zip(idx, texts):
                hyps[i] = trim_loops(text.strip(), examples[i].seconds) if loop_guard else text.strip()
            bar.update(len(idx))
    return hyps


def eval_loss(model, family, examples: list[Example], batch_size: int = 8) -> float:
    """Token-weighted mean cross-entropy of the labels under teacher forcing."""
    import torch


    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode(), _bar(len(examples), "eval loss") as bar:
        for idx in length_grouped_batches(examples, batch_size):
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], family).items()}
            n = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
            bar.update(len(idx))
    return total / max(tokens, 1)


def assess(model, processor, family, loss_examples: list[Example], wer_examples: list[Example], batch_size: int = 8) -> dict:
    """Eval loss on `loss_examples` and scored transcripts of `wer_examples` (one model state)."""

    hyps = transcribe_examples(model, processor, family, wer_examples, batch_size)
    scores = score([e.id for e in wer_examples], [e.text for e in wer_examples], hyps)
    return {"eval_loss": eval_loss(model, family, loss_examples, batch_size), **scores}
