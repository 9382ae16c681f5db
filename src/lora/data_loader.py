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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.audio import SAMPLE_RATE, to_mono_16k
from lora.errors import UserError
from lora.paths import default_speech_dir
from lora.utterances import Utterance, list_subsets, read_librispeech_dir, split_folder

log = logging.getLogger("lora")

HUB_DATASET = "librispeech_asr"
HUB_EVAL_SPLIT = "validation"
DEFAULT_EVAL_FRACTION = 0.25
# General read speech scored before and after training to measure forgetting.
CANARY_SUBSETS = ("test-clean", "dev-clean", "test-other", "dev-other", "ljspeech")


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


# ---------------------------------------------------------------------------------------------
# splitting and selection (pure)


def split_by_speaker(
    utterances: list[Utterance], eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 42
) -> tuple[list[Utterance], list[Utterance]]:
    """Split so that no speaker is in both parts; deterministic under `seed`."""
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise UserError(
            f"need at least two speakers for a speaker-disjoint train/eval split, found {len(speakers)} "
            f"({', '.join(speakers) or 'none'}); add recordings from another speaker"
        )
    random.Random(seed).shuffle(speakers)
    n_eval = min(len(speakers) - 1, max(1, round(eval_fraction * len(speakers))))
    eval_speakers = set(speakers[:n_eval])
    train = [u for u in utterances if u.speaker not in eval_speakers]
    held = [u for u in utterances if u.speaker in eval_speakers]
    return train, held


def select_balanced(utterances: list[Utterance], n: int, seed: int = 42) -> list[Utterance]:
    """Up to `n` utterances, round-robin over speakers so no single speaker dominates."""
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.id):
        by_speaker[u.speaker].append(u)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    for q in queues:
        rng.shuffle(q)
    rng.shuffle(queues)
    chosen: list[Utterance] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return chosen


def split_by_named_speakers(
    utterances: list[Utterance], train_speakers, eval_speakers
) -> tuple[list[Utterance], list[Utterance]]:
    """Explicit speaker lists (e.g. a recipe's); refuses overlap."""
    overlap = set(train_speakers) & set(eval_speakers)
    if overlap:
        raise UserError(f"speakers {sorted(overlap)} are in both --train-speakers and --eval-speakers")
    train = [u for u in utterances if u.speaker in set(train_speakers)]
    held = [u for u in utterances if u.speaker in set(eval_speakers)]
    for name, part, wanted in (("train", train, train_speakers), ("eval", held, eval_speakers)):
        if not part:
            raise UserError(f"no utterances found for {name} speakers {list(wanted)}")
    return train, held


# ---------------------------------------------------------------------------------------------
# sources


def checked(rows: list[Utterance], bad=(), quarantine_path: str | None = None, source: str = "",
            require_text: bool = True) -> list[Utterance]:
    """Preflight: the usable rows; unusable ones are logged and listed in the quarantine file."""
    from lora.preflight import preflight

    report = preflight(rows, bad, quarantine_path=quarantine_path, require_text=require_text, quiet=True, source=source)
    return list(report.good)


def read_manifest_rows(path: str | Path, quarantine_path: str | None = None) -> list[Utterance]:
    """Usable rows of a manifest in any supported format (after preflight)."""
    from lora.manifest import read_source

    read = read_source(Path(path))
    return checked(list(read.rows), read.bad, quarantine_path, read.source)


def hub_stream(split: str, limit: int, seed: int = 42) -> list[Utterance]:
    """Up to `limit` utterances of `librispeech_asr` streamed from the hub, decoded with soundfile.

    Audio is cast to `Audio(decode=False)` so `datasets` hands over the encoded bytes and no
    FFmpeg/torchcodec is needed.
    """
    import datasets
    import soundfile as sf
    import io

    config = "other" if "other" in split else "clean"
    hub_split = split.replace("clean.", "").replace("other.", "")
    stream = datasets.load_dataset(HUB_DATASET, config, split=hub_split, streaming=True)
    stream = stream.cast_column("audio", datasets.Audio(decode=False))
    rows: list[Utterance] = []
    for item in stream:
        audio = item["audio"]
        data = audio.get("bytes") or Path(audio["path"]).read_bytes()
        samples, sr = sf.read(io.BytesIO(data), dtype="float32")
        rows.append(
            Utterance(
                id=str(item["id"]),
                speaker=str(item["speaker_id"]),
                text=item["text"],
                audio=to_mono_16k(samples, sr),
                sampling_rate=SAMPLE_RATE,
                origin=f"hub:{HUB_DATASET}/{config}/{hub_split}",
                subset=hub_split,
            )
        )
        if len(rows) >= limit:
            break
    return rows


def _local_pools(root: Path, train_split: str) -> tuple[list[Utterance], list[Utterance] | None, str]:
    """(train pool, eval pool or None to split by speaker, note) from a LibriSpeech-layout folder."""
    subsets = list_subsets(root)
    wanted = split_folder(train_split)
    if wanted in subsets:
        train = read_librispeech_dir(root, [wanted])
        eval_folder = split_folder(HUB_EVAL_SPLIT)
        held = read_librispeech_dir(root, [eval_folder]) if eval_folder in subsets and eval_folder != wanted else None
        return train, held, f"{root}/{wanted}"
    pool_subsets = [s for s in subsets if not s.startswith("test")]
    if not pool_subsets:
        raise UserError(f"{root}: no training subsets found (only {subsets}); add a LibriSpeech-layout subset")
    log.info(
        "split %r (%s) is not in %s; training on a speaker-disjoint part of %s (test-* folders left out)",
        train_split, wanted, root, ", ".join(pool_subsets),
    )
    return read_librispeech_dir(root, pool_subsets), None, f"{root} [{'+'.join(pool_subsets)}]"


def resolve_data(choice: DataChoice, hub_ok: bool) -> TrainEvalData:
    """Pick the source, split speaker-disjointly and sample train/eval utterances."""
    held: list[Utterance] | None = None
    if choice.manifest:
        pool, kind, where = read_manifest_rows(choice.manifest, choice.quarantine_path), "manifest", str(choice.manifest)
    elif choice.data_dir:
        pool, held, where = _local_pools(Path(choice.data_dir), choice.train_split)
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
        pool, held, where = _local_pools(root, choice.train_split)
        kind = "local_default"
    if kind != "hub":  # streamed rows are decoded as they arrive; local files are checked first
        pool = checked(pool, (), choice.quarantine_path, where)
        held = checked(held, (), None, where) if held is not None else None
    if choice.train_speakers or choice.eval_speakers:
        train, held = split_by_named_speakers(pool + (held or []), choice.train_speakers, choice.eval_speakers)
    elif held is None:
        train, held = split_by_speaker(pool, seed=choice.seed)
    else:
        train = pool
    train = select_balanced(train, choice.dataset_samples, choice.seed)
    if not (choice.train_speakers or choice.eval_speakers):
        held = _without_train_texts(held, train)
    held = select_balanced(held, choice.eval_samples, choice.seed + 1)
    replay = _replay_rows(choice, held)
    log.info("data: %s (%s): %d train / %d eval / %d replay utterances", kind, where, len(train), len(held), len(replay))
    return TrainEvalData(train, held, {"kind": kind, "where": where, "train_split": choice.train_split}, replay)


def _replay_rows(choice: DataChoice, held: list[Utterance]) -> list[Utterance]:
    if not choice.replay_subsets:
        return []
    root = Path(choice.data_dir) if choice.data_dir else default_speech_dir()
    rows = read_librispeech_dir(root, list(choice.replay_subsets)) if root else []
    eval_speakers = {u.speaker for u in held}
    rows = [u for u in rows if u.speaker not in eval_speakers]
    if not rows:
        raise UserError(f"--replay-subsets {','.join(choice.replay_subsets)}: no utterances found in {root}")
    return rows


def mix_replay(train: list, replay: list, share: float) -> list:
    """Training examples with `replay` repeated so it makes up about `share` of the utterances."""
    if not replay or share <= 0:
        return list(train)
    wanted = round(share * len(train) / (1 - share))
    copies = max(1, round(wanted / len(replay)))
    return list(train) + list(replay) * copies


def _without_train_texts(held: list[Utterance], train: list[Utterance]) -> list[Utterance]:
    """Eval candidates whose transcript was not trained on (when we choose the split ourselves)."""
    from lora.text import normalize_for_scoring

    seen = {normalize_for_scoring(u.text) for u in train}
    kept = [u for u in held if normalize_for_scoring(u.text) not in seen]
    if len(kept) < len(held):
        log.info("left %d eval candidates out: their transcript is also in the training set", len(held) - len(kept))
    return kept


def check_leakage(data: TrainEvalData, allow_shared_speakers: bool = False, allow_shared_text: bool = False) -> dict:
    """Refuse a split whose eval part shares speakers or transcripts with training (override flags)."""
    from lora.evaluation import leakage

    found = leakage(data.train, data.eval)
    if found["shared_speakers"] and not allow_shared_speakers:
        raise UserError(
            f"speaker leakage: speaker(s) {', '.join(found['shared_speakers'][:5])} are in both train and eval; "
            "use disjoint speakers (or --allow-shared-speakers to override)"
        )
    if found["shared_texts"] and not allow_shared_text:
        raise UserError(
            f"transcript leakage: {len(found['shared_texts'])} identical transcript(s) in train and eval "
            f"(e.g. {found['shared_texts'][0]!r}); use other utterances (or --allow-shared-text for closed vocabularies)"
        )
    return found


def canary_utterances(root: Path | None, exclude: TrainEvalData, limit: int = 0, seed: int = 42) -> list[Utterance]:
    """General read speech (LibriSpeech/LJSpeech subsets) from speakers not trained or evaluated on."""
    if root is None or not Path(root).is_dir():
        return []
    subsets = [s for s in list_subsets(root) if s in CANARY_SUBSETS]
    busy = {u.speaker for u in exclude.train} | {u.speaker for u in exclude.eval}
    rows = [u for u in read_librispeech_dir(root, subsets) if u.speaker not in busy] if subsets else []
    return select_balanced(rows, limit, seed) if limit else rows


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
