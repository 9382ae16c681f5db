"""The reference trainer the benchmark compares ours with: `transformers.Seq2SeqTrainer` + PEFT.

Why: "fast" only means something next to what people would otherwise write. This is the idiomatic
Hugging Face recipe: a torch `Dataset` of precomputed features + labels, a padding `DataCollator`,
`Seq2SeqTrainingArguments` with the same learning rate, schedule, micro-batch, accumulation, steps,
clipping and seed as our run, no evaluation, no saving, no reporting, at its best settings: its own
length grouping (`LengthGroupedSampler` over the clips' durations), dataloader worker processes, and
the same precision as ours. It pads with the same family functions ours uses, so the two differ only
in the training loop and in how batches are drawn.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

from lora.families import pad_labels


class ExampleDataset:
    """Map-style dataset over `lora.data_loader.Example`s (features computed once, as ours)."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"inputs": e.inputs, "labels": e.labels, "seconds": e.seconds}


@dataclass
class SpeechCollator:
    """Pads a list of dataset items into model tensors and counts the real audio and tokens it saw."""

    family: object
    audio_seconds: float = 0.0
    label_tokens: int = 0
    padded_seconds: float = 0.0
    seen: list = field(default_factory=list)

    def __call__(self, items: list[dict]) -> dict:

        self.audio_seconds += sum(x["seconds"] for x in items)
        self.label_tokens += sum(len(x["labels"]) for x in items)
        self.padded_seconds += max(x["seconds"] for x in items) * len(items)
        batch = self.family.pad_inputs([x["inputs"] for x in items])
        batch["labels"] = pad_labels([x["labels"] for x in items])
        return batch


def _group_by_length(args_class) -> dict:
    """The Trainer's length grouping, as this transformers version spells it."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    return {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names else {"group_by_length": True}


def train_reference(model, family, examples, cfg, bf16: bool = False, workers: int = 0) -> dict:
    """Train `model` (already PEFT-wrapped) with Seq2SeqTrainer; wall time of `trainer.train()`.
    `bf16` turns on the Trainer's own bf16 autocast (`bf16=True`), for the like-for-like comparison."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    collator = SpeechCollator(family)
    with tempfile.TemporaryDirectory(prefix="ref_trainer_") as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            lr_scheduler_type="linear", warmup_steps=int(cfg.warmup_ratio * cfg.max_steps),
            optim="adamw_torch", seed=cfg.seed, data_seed=cfg.seed, use_cpu=True, bf16=bf16,
            eval_strategy="no", save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True,
            dataloader_num_workers=workers, remove_unused_columns=False, label_names=["labels"],
            **_group_by_length(Seq2SeqTrainingArguments),
        )
        dataset = ExampleDataset(examples)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        lengths = [e.seconds for e in examples]
        order: list[int] = []

        class Recording(LengthGroupedSampler):
            """The Trainer's own length grouping over the clips' durations, recording what it drew
            (the collator runs in the worker processes, so it cannot count for us)."""

            def __iter__(self):
                indices = list(super().__iter__())
                order.extend(indices)
                return iter(indices)

        trainer._get_train_sampler = lambda *a, **k: Recording(cfg.batch_size, dataset=dataset, lengths=lengths)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    used = order[: cfg.max_steps * cfg.gradient_accumulation_steps * cfg.batch_size]
    batches = [used[i: i + cfg.batch_size] for i in range(0, len(used), cfg.batch_size)]
    return {"wall_seconds": wall, "audio_seconds": sum(examples[i].seconds for i in used),
            "label_tokens": sum(len(examples[i].labels) for i in used),
            "padded_audio_seconds": sum(max(examples[i].seconds for i in b) * len(b) for b in batches), "losses": losses,
            "workers": workers, "sampler": "LengthGroupedSampler (group by length)"}
