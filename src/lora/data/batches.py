"""Records -> model-ready examples -> length-grouped, padded batches.

Featurising and tokenising are the family's (`featurize`, `label_ids`); this file decides which
records go together and pads them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.data.records import Utterance
from lora.families import pad_labels


@dataclass
class Example:
    """One utterance ready for the model: features computed once, labels tokenised once."""

    id: str
    speaker: str
    text: str
    inputs: np.ndarray
    labels: list[int]
    seconds: float




def prepare_dataset(utterances: list[Utterance], processor, family, policy: str | None = None) -> list[Example]:
    """Decode, featurise and tokenise every utterance once (reused across epochs and evals)."""
    examples = []
    for u in utterances:
        samples = u.samples()
        examples.append(
            Example(
                id=u.id,
                speaker=u.speaker,
                text=u.text,
                inputs=family.featurize(processor, samples),
                labels=family.label_ids(processor.tokenizer, u.extra.get("target") or u.text, policy),
                seconds=len(samples) / SAMPLE_RATE,
            )
        )
    return examples


def length_grouped_batches(examples: list[Example], batch_size: int, seed: int | None = None) -> list[list[int]]:
    """Index batches of similar length (less padding); batch order shuffled when `seed` is set."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].seconds)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if seed is not None:
        random.Random(seed).shuffle(batches)
    return batches


def collate(examples: list[Example], family) -> dict:
    """Model-ready tensors: the family's padded inputs plus -100-padded labels."""

    batch = family.pad_inputs([e.inputs for e in examples])
    batch["labels"] = pad_labels([e.labels for e in examples])
    return batch
