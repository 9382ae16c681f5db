"""Sources -> `Utterance` records -> speaker-disjoint splits -> `Example`s -> padded batches.

Three real-audio sources, tried in this order unless the user names one:
  1. a manifest (`--manifest`, any format `lora.manifest` reads),
  2. a local LibriSpeech-layout folder (`--data-dir`),
  3. `librispeech_asr` streamed from the Hugging Face hub (audio kept undecoded, decoded with
     soundfile) when the hub is reachable,
  4. `$LORA_SPEECH_DIR`, else `../shared/speech`.
Never silence, noise or synthetic audio: when nothing real is found the run stops with a message.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.audio import SAMPLE_RATE
from lora.errors import UserError
from lora.paths import default_speech_dir
from lora.manifest import read_source
from lora.sources import HUB_DATASET, HUB_EVAL_SPLIT, checked, hub_stream, local_pools, replay_rows
from lora.splits import select_balanced, split_by_named_speakers, split_by_speaker, without_train_texts
from lora.utterances import Utterance

log = logging.getLogger("lora")


@dataclass(frozen=True)
class DataChoice:
    """What the user asked for; `resolve_data` turns it into train/eval utterances."""

    train_split: str = "train.100"
    data_dir: str | None = None
    manifest: str | None = None
    dataset_samples: int = 40
    eval_samples: int = 8
    seed: int = 42
    train_speakers: tuple[str, ...] = ()
    eval_speakers: tuple[str, ...] = ()
    use_hub: bool = True
    replay_subsets: tuple[str, ...] = ()  # general-speech folders mixed into training (forgetting control)
    quarantine_path: str | None = None  # where preflight lists unusable rows


@dataclass
class TrainEvalData:
    train: list[Utterance]
    eval: list[Utterance]
    source: dict = field(default_factory=dict)  # recorded as `data_source` in the metrics
    replay: list[Utterance] = field(default_factory=list)  # general speech mixed into training


@dataclass
class Example:
    """One utterance ready for the model: features computed once, labels tokenised once."""

    id: str
    speaker: str
    text: str
    inputs: np.ndarray
    labels: list[int]
    seconds: float


def resolve_data(choice: DataChoice, hub_ok: bool) -> TrainEvalData:
    """Pick the source, split speaker-disjointly and sample train/eval utterances."""
    held: list[Utterance] | None = None
    bad = ()
    if choice.manifest:
        read = read_source(Path(choice.manifest))
        pool, bad, kind, where = list(read.rows), read.bad, "manifest", read.source
    elif choice.data_dir:
        pool, held, where = local_pools(Path(choice.data_dir), choice.train_split)
        kind = "local_dir"
    elif choice.use_hub and hub_ok:
        pool = hub_stream(choice.train_split, choice.dataset_samples * 4, choice.seed)
        held = hub_stream(HUB_EVAL_SPLIT, choice.eval_samples * 4, choice.seed)
        kind, where = "hub", f"{HUB_DATASET}:{choice.train_split}"
    else:
        root = default_speech_dir()
        if root is None:
            raise UserError(
                "no speech data: the hub is unreachable and neither --data-dir, --manifest, "
                "$LORA_SPEECH_DIR nor ../shared/speech exists"
            )
        pool, held, where = local_pools(root, choice.train_split)
        kind = "local_default"
    if kind != "hub":  # streamed rows are decoded as they arrive; local files are checked first
        pool = checked(pool, bad, choice.quarantine_path, where)
        held = checked(held, (), None, where) if held is not None else None
    if choice.train_speakers or choice.eval_speakers:
        train, held = split_by_named_speakers(pool + (held or []), choice.train_speakers, choice.eval_speakers)
    elif held is None:
        train, held = split_by_speaker(pool, seed=choice.seed)
    else:
        train = pool
    train = select_balanced(train, choice.dataset_samples, choice.seed)
    if not (choice.train_speakers or choice.eval_speakers):
        held = without_train_texts(held, train)
    held = select_balanced(held, choice.eval_samples, choice.seed + 1)
    if len(held) < choice.eval_samples:
        log.warning("only %d of %d requested eval utterances are usable (speaker-disjoint, transcript not trained on); "
                    "WER on so few says little: add data or name --eval-speakers", len(held), choice.eval_samples)
    replay = replay_rows(choice.replay_subsets, choice.data_dir, held)
    log.info("data: %s (%s): %d train / %d eval / %d replay utterances", kind, where, len(train), len(held), len(replay))
    return TrainEvalData(train, held, {"kind": kind, "where": where, "train_split": choice.train_split}, replay)


# ---------------------------------------------------------------------------------------------
# examples and batches


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
                labels=family.label_ids(processor.tokenizer, u.text, policy),
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
    from lora.families import pad_labels

    batch = family.pad_inputs([e.inputs for e in examples])
    batch["labels"] = pad_labels([e.labels for e in examples])
    return batch
