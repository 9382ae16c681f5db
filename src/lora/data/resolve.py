"""Which rows train and which evaluate: source -> checked records -> speaker-disjoint train/eval/replay.

Real-audio sources, tried in this order unless the user names one:
  0. a Hugging Face-style dataset (`--dataset`: a `save_to_disk` folder, an `audiofolder`,
     Parquet/Arrow files, a Common Voice folder or a hub dataset name, streamed; from Python also a
     `datasets.Dataset` object), read by `lora.data.hf_sources.read_dataset`,
  1. a manifest (`--manifest`, any format `lora.data.manifest` reads),
  2. a local LibriSpeech-layout folder (`--data-dir`),
  3. `librispeech_asr` streamed from the Hugging Face hub (audio kept undecoded, decoded with
     soundfile) when the hub is reachable,
  4. `$LORA_SPEECH_DIR`, else `../shared/speech`.
Never silence, noise or synthetic audio: when nothing real is found the run stops with a message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.errors import UserError
from lora.core.paths import default_speech_dir
from lora.data.hf_sources import HFSourceOptions, looks_like_hub_name, read_dataset
from lora.data.manifest import read_source
from lora.data.records import Utterance
from lora.data.selection import (
    select_balanced,
    split_by_named_speakers,
    split_by_speaker,
    split_by_utterance,
    without_train_texts,
)
from lora.data.sources import (
    HUB_DATASET,
    HUB_EVAL_SPLIT,
    checked,
    hub_stream,
    local_pools,
    read_manifest_rows,
    replay_rows,
)

log = logging.getLogger("lora")
EVAL_QUARANTINE = "eval_quarantine.jsonl"  # unusable rows of --eval-manifest, beside the training data's quarantine


@dataclass(frozen=True)
class DataChoice:
    """What the user asked for; `resolve_data` turns it into train/eval utterances."""

    train_split: str = "train.100"
    data_dir: str | None = None
    manifest: str | None = None
    dataset_samples: int = 40
    eval_samples: int = 8  # 0: every usable eval row
    seed: int = 42
    train_speakers: tuple[str, ...] = ()
    eval_speakers: tuple[str, ...] = ()
    use_hub: bool = True
    replay_subsets: tuple[str, ...] = ()  # general-speech folders mixed into training (forgetting control)
    eval_manifest: str | None = None  # the user's own test set: the eval rows (no split of the training data)
    allow_shared_speakers: bool = False  # one speaker's data: hold out utterances instead of speakers
    quarantine_path: str | None = None  # where preflight lists unusable rows
    # `--dataset`: a path / hub name, or a `datasets.Dataset` (`IterableDataset`, `DatasetDict`) object from Python
    dataset: object = None
    audio_column: str | None = None  # None: the first of hf_sources.AUDIO_COLUMNS the dataset has
    text_column: str | None = None
    speaker_column: str | None = None
    dataset_split: str = "train"  # split of a DatasetDict / audiofolder / Common Voice / hub dataset


def dataset_options(choice: DataChoice) -> HFSourceOptions:
    """How `choice.dataset` is read; a streamed hub dataset stops after enough rows to sample from."""
    wanted = (choice.dataset_samples + choice.eval_samples) * 4 if choice.dataset_samples else None
    return HFSourceOptions(split=choice.dataset_split, audio_column=choice.audio_column, text_column=choice.text_column,
                           speaker_column=choice.speaker_column, max_rows=wanted if _is_hub_name(choice.dataset) else None)


def _is_hub_name(dataset) -> bool:
    return isinstance(dataset, str) and not Path(dataset).expanduser().exists() and looks_like_hub_name(dataset)


@dataclass
class TrainEvalData:
    train: list[Utterance]
    eval: list[Utterance]
    source: dict = field(default_factory=dict)  # recorded as `data_source` in the metrics
    replay: list[Utterance] = field(default_factory=list)  # general speech mixed into training


def resolve_data(choice: DataChoice, hub_ok: bool) -> TrainEvalData:
    """Pick the source, split speaker-disjointly and sample train/eval utterances."""
    held: list[Utterance] | None = None
    bad = ()
    requested = used = choice.train_split
    if choice.dataset is not None:  # --train-split names LibriSpeech folders; a dataset's split is --dataset-split
        read = read_dataset(choice.dataset, dataset_options(choice))
        pool, bad, kind, where = list(read.rows), read.bad, f"dataset_{read.kind}", read.source
        requested, used = choice.dataset_split, f"{choice.dataset_split} of dataset {read.source}"
    elif choice.manifest:
        read = read_source(Path(choice.manifest))
        pool, bad, kind, where, used = list(read.rows), read.bad, "manifest", read.source, f"manifest {read.source}"
    elif choice.data_dir:
        pool, held, where, used = local_pools(Path(choice.data_dir), choice.train_split)
        kind = "local_dir"
    elif choice.use_hub and hub_ok:
        pool = hub_stream(choice.train_split, choice.dataset_samples * 4 or None, choice.seed)
        held = None if choice.eval_manifest else hub_stream(HUB_EVAL_SPLIT, choice.eval_samples * 4, choice.seed)
        kind, where = "hub", f"{HUB_DATASET}:{choice.train_split}"
    else:
        root = default_speech_dir()
        if root is None:
            raise UserError(
                "no speech data: the hub is unreachable and neither --data-dir, --manifest, "
                "$LORA_SPEECH_DIR nor ../shared/speech exists"
            )
        pool, held, where, used = local_pools(root, choice.train_split)
        kind = "local_default"
    if kind != "hub":  # streamed rows are decoded as they arrive; local files are checked first
        pool = checked(pool, bad, choice.quarantine_path, where)
        held = checked(held, (), None, where) if held is not None else None
    corpus = pool + (held or [])
    facts = {"corpus_rows": len(corpus), "corpus_hours": sum(u.extra.get("seconds", 0.0) for u in corpus) / 3600,
             "repeated_rows": sum(1 for u in corpus if "repeat_of" in u.extra)}
    if facts["repeated_rows"]:
        log.warning("%d of %d rows repeat another row's real clip (a scale corpus): memory, start-up and throughput "
                    "measured on it are real, WER on it means nothing", facts["repeated_rows"], len(corpus))
    del corpus
    if choice.eval_manifest:  # the source's own held-out part (a dev split) is not trained on either
        train = pool
        quarantine = Path(choice.quarantine_path).with_name(EVAL_QUARANTINE) if choice.quarantine_path else None
        held = read_manifest_rows(choice.eval_manifest, str(quarantine) if quarantine else None)
        if not held:
            raise UserError(f"{choice.eval_manifest}: no usable eval rows (listed in {quarantine}); fix them or pass "
                            "another --eval-manifest")
    elif choice.train_speakers or choice.eval_speakers:
        train, held = split_by_named_speakers(pool + (held or []), choice.train_speakers, choice.eval_speakers)
    elif held is None and choice.allow_shared_speakers and len({u.speaker for u in pool}) < 2:
        train, held = split_by_utterance(pool, seed=choice.seed)
        log.warning("one speaker (%s): held out %d of its utterances; WER measures this speaker's unseen utterances, "
                    "not unseen speakers", pool[0].speaker or "no speaker field" if pool else "none", len(held))
    elif held is None:
        try:
            train, held = split_by_speaker(pool, seed=choice.seed)
        except UserError as exc:  # name the data it could not split
            raise UserError(f"{where}: {exc}") from None
    else:
        train = pool
    train = select_balanced(train, choice.dataset_samples, choice.seed) if choice.dataset_samples else train
    if not (choice.train_speakers or choice.eval_speakers or choice.eval_manifest):
        held = without_train_texts(held, train)
    held = select_balanced(held, choice.eval_samples, choice.seed + 1) if choice.eval_samples else held
    if len(held) < choice.eval_samples:
        rule = "transcript not trained on" if choice.allow_shared_speakers else "speaker-disjoint, transcript not trained on"
        log.warning("only %d of %d requested eval utterances are usable (%s); WER on so few says little: add data or "
                    "name --eval-speakers", len(held), choice.eval_samples, rule)
    replay = replay_rows(choice.replay_subsets, choice.data_dir, held)
    log.info("data: %s (%s): %d train / %d eval / %d replay utterances", kind, where, len(train), len(held), len(replay))
    source = {"kind": kind, "where": where, "train_split_requested": requested, "train_split_used": used} | facts
    return TrainEvalData(train, held, source, replay)



