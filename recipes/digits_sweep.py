"""Choose the digits recipe's defaults by measurement, on the TRAINING speakers only.

Speakers 9201-9203 train, 9204 validates (the recipe's evaluation speakers 9205-9206 are never
loaded here). For each family, a small grid over learning rate, LoRA rank, target modules (encoder
+ decoder attention, decoder only, encoder only), steps and replay share; the model and features
are loaded once and every configuration starts from a fresh copy of the base weights.

Forgetting is measured without touching the recipe's canary (test-clean + LJSpeech): general speech
replayed during the sweep comes from dev-clean speaker 3752 + JFK only, and the "forgetting check" is
WER on dev-clean speaker 1988, never trained on here. Selection rule: lowest validation WER among
the points whose forgetting-check WER rose by at most FORGET_BUDGET and whose training took at most
TRAIN_BUDGET_S on the machine that ran the sweep; if none, the least forgetting.
Writes a markdown table + JSON.

    uv run python recipes/digits_sweep.py --family whisper [--grid fast] [--output recipes/results/sweep_whisper.md]
    uv run python recipes/digits_sweep.py --family moonshine --grid recipe --extra-speech-dir ../shared/speech-extra \
        --output recipes/results/sweep_moonshine_recipe.md

`--grid recipe`: the recipe's data mix (joined clips, replay, styled targets) over learning rate and steps,
on every take of the sweep speakers when `--extra-speech-dir` is given (as the recipe trains).

`--grid fast` (Whisper): the recipe's all-attention point against decoder-only points, all with the
recipe's joined clips, for CPUs where the 30 s encoder's backward pass does not fit the time budget.

`--grid consensus`: the recipe's point with each clip's own styled target against its text's most common
styled form (`--style-consensus`, lora.styled_targets).

`--grid placement` (Moonshine): the recipe's all-attention point against LoRA on the encoder only (the
digits shift is acoustic, narrow-band 8 kHz recordings; casing and punctuation are written by the
decoder, which encoder-only LoRA leaves as it was) and on the decoder only (the encoder's acoustic
features, pauses included, kept as they were), with the recipe's data mix. `--reuse FILE` takes the
rows of points already measured from an earlier run's JSON and trains only the others.

`--grid style` (Moonshine): the recipe's point (encoder-only, consensus targets) against shorter schedules
and more replay, for a style check with more speech than the 5 clips that scored the recipe's point 0.909:
the conversation clips of `recipes/style_audio.py` added to it.
`--grid distillation`: the recipe's point of each family with replay also distilled to the base model
(`--replay-distillation` 0, 1, 4 and 16: KL to the model with its adapters off on the replay clips,
`lora.token_loss.distillation_to_base`; 16 added after the first runs of 0 / 1 / 4, whose files have those three rows).

Style check: punctuation and capitalisation F1 of the tuned model's output against the base model's, on
the forgetting check plus any real speech given with `--style-audio` (no transcript needed: the reference
is the base model's own output). By default that is `test-data/beckett.wav`, the 10 s of punctuated
read speech shipped in the `moonshine-cpp` wheel: neither trained on, replayed, nor in the recipe's canary.
A `--style-audio` clip with a human punctuated transcript beside it (`<clip>.txt`, as recipes/style_audio.py
writes for the conversation) is scored against that transcript instead, and the tuned model keeps style there
when its F1 on each such clip is at least the base model's: the base model's own output is no yardstick where it is
unpunctuated (it writes the conversation's first turn as one lower-case run that every tuned point punctuates).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from lora.core.outputs import write_json_atomic, write_text_atomic
from lora.core.precision import resolve_precision
from lora.data.clip_joining import with_joined_clips
from lora.data.records import Utterance, read_librispeech_dir
from lora.data.resolve import DataChoice, resolve_data
from lora.data.selection import mix_replay, replay_mask
from lora.data_loader import LoaderOptions, prepare_dataset
from lora.decoding import assess, transcribe_examples
from lora.model_utils import attach_lora, load_base, resolve_model_id
from lora.runners.digits import digits_manifest
from lora.style_metrics import MIN_CAPITALISATION_F1, MIN_PUNCTUATION_F1, capitalisation_f1, punctuation_f1
from lora.styled_targets import TranscriptCache, style_rows
from lora.training import example_source, train_lora
from lora.training_config import TrainConfig

SWEEP_TRAIN = ("9201", "9202", "9203")
SWEEP_VALID = ("9204",)
SWEEP_REPLAY = ("3752", "9101")  # dev-clean 3752 + the JFK clip (speaker 9101)
# dev-clean 1988: "THE TWO STRAY KITTENS...", "...CHASES THEM FOR FUN...": number words inside
# sentences, where a digits-tuned model learns to stop ("Four" for "For although..."). A first
# forgetting check without such words (3752 + JFK) scored every point the same.
FORGET_CHECK = ("1988",)
FORGET_BUDGET = 0.01  # WER rise on the forgetting check (the recipe's canary target is 1 point)
# The recipe's training-time target (5 min per family). The sweep trains on 150 utterances, the recipe on
# 200, with the same batch and steps: the same cost per step, but with a frozen (cached) encoder the
# recipe encodes a third more distinct clips once, so its time is the sweep's or a little more;
# `make demo-digits` measures the recipe's own.
TRAIN_BUDGET_S = 300.0
MODELS = {"moonshine": "moonshine-base-en", "whisper": "whisper-tiny.en"}
NARROWBAND_RATE = 8_000  # FSDD's (and a telephone's) 8 kHz: nothing above 4 kHz


def grid(family: str, name: str = "default"):
    """Moonshine: the full grid (no replay: it was added after the recipe's canary showed forgetting).
    Whisper (30 s padded input, ~5x the cost per step): fewer points, replay share and LoRA placement.
    Whisper "fast": decoder-only LoRA (the frozen encoder then runs once per batch, `lora.encoder_cache`)
    at higher learning rates and more steps, beside the recipe's all-attention point; joined clips as
    in the recipe."""
    point = {"lora_r": 8, "lora_alpha": 16, "join_clips": 1}
    if name == "recipe":  # the recipe's data mix (joined clips, replay) over learning rate and steps
        where, steps = ("all", (120, 240)) if family == "moonshine" else ("decoder", (60, 120))
        for lr, n in itertools.product((1e-3, 3e-3), steps):
            yield point | {"learning_rate": lr, "targets": where, "max_steps": n, "replay_share": 0.15, "join_clips": 3}
        for lr in (1e-3, 3e-3):  # more replay: does it keep the style better at the longer schedule?
            yield point | {"learning_rate": lr, "targets": where, "max_steps": steps[-1], "replay_share": 0.3, "join_clips": 3}
        return
    if name == "consensus":  # the recipe's point with each clip's own styled target, and with its text's most common one
        where, lr, n = ("encoder", 1e-3, 240) if family == "moonshine" else ("decoder", 3e-3, 60)
        for consensus in (False, True):
            yield point | {"learning_rate": lr, "targets": where, "max_steps": n, "replay_share": 0.15, "join_clips": 3,
                           "style_consensus": consensus}
        return
    if name == "style":  # Moonshine's recipe point against shorter schedules and more replay, for a larger style check
        point |= {"targets": "encoder", "join_clips": 3, "style_consensus": True}
        for lr, n, replay in ((1e-3, 240, 0.15), (1e-3, 240, 0.3), (1e-3, 180, 0.15), (1e-3, 120, 0.15), (3e-3, 120, 0.15)):
            yield point | {"learning_rate": lr, "max_steps": n, "replay_share": replay}
        for n in (240, 180):  # replay also through the digits' 8 kHz band (added once the points above all lost style)
            yield point | {"learning_rate": 1e-3, "max_steps": n, "replay_share": 0.15, "replay_narrowband": True}
        return
    if name == "distillation":  # the recipe's point, with replay also distilled to the base model (lora.token_loss)
        where, lr, n, consensus = ("encoder", 1e-3, 240, True) if family == "moonshine" else ("decoder", 3e-3, 60, False)
        for weight in (0.0, 1.0, 4.0, 16.0):  # 16: added once a larger style check saw every weight lose style
            yield point | {"learning_rate": lr, "targets": where, "max_steps": n, "replay_share": 0.15, "join_clips": 3,
                           "style_consensus": consensus, "replay_distillation": weight}
        return
    if name == "placement":  # LoRA on the encoder only, beside the recipe's all-attention point
        yield point | {"learning_rate": 3e-3, "targets": "all", "max_steps": 240, "replay_share": 0.15, "join_clips": 3}
        for lr, n in ((1e-3, 240), (3e-3, 240), (3e-3, 360)):
            yield point | {"learning_rate": lr, "targets": "encoder", "max_steps": n, "replay_share": 0.15, "join_clips": 3}
        for lr in (1e-3, 3e-3):  # and the decoder only (the encoder's acoustic features, pauses included, kept)
            yield point | {"learning_rate": lr, "targets": "decoder", "max_steps": 240, "replay_share": 0.15, "join_clips": 3}
        return
    if family == "whisper" and name == "fast":
        for lr, steps in itertools.product((1e-3, 3e-3), (60, 120)):
            yield point | {"learning_rate": lr, "targets": "decoder", "max_steps": steps, "replay_share": 0.15, "join_clips": 3}
        yield point | {"learning_rate": 1e-3, "targets": "all", "max_steps": 60, "replay_share": 0.15, "join_clips": 3}
        return
    if family == "whisper":
        for lr, where, replay in itertools.product((3e-4, 1e-3), ("all", "decoder", "encoder"), (0.15, 0.4)):
            yield point | {"learning_rate": lr, "targets": where, "max_steps": 60, "replay_share": replay}
        return
    for lr, where, steps in itertools.product((3e-4, 1e-3, 3e-3), ("all", "decoder"), (30, 60, 120)):
        yield point | {"learning_rate": lr, "targets": where, "max_steps": steps, "replay_share": 0.0}
    for steps in (60, 120):
        yield point | {"learning_rate": 1e-3, "lora_r": 16, "lora_alpha": 32, "targets": "all", "max_steps": steps, "replay_share": 0.0}


def narrowband_copies(rows: list[Utterance], rate: int = NARROWBAND_RATE) -> list[Utterance]:
    """Each row's real recording again, resampled to `rate` (its band cut at rate / 2, as FSDD's 8 kHz files
    and a telephone channel cut it) under the id `<id>~<rate/1000>k`, same speaker, text and extras; decoded
    here (the replay set is a few clips). The idea (`--grid style`): a model tuned on narrow-band clips of
    single words learns that narrow-band audio is written as single words; replaying general sentences
    through the same band as well might show it that such audio still carries sentences and punctuation."""
    import soxr

    suffix = f"~{rate // 1000}k"
    return [Utterance(u.id + suffix, u.speaker, u.text, soxr.resample(u.samples(), 16_000, rate, quality="HQ"), rate,
                      u.origin, u.subset, dict(u.extra)) for u in rows]


def default_style_audio() -> list[str]:
    """The moonshine-cpp wheel's Beckett reading, when that package is installed (the `moonshine` extra)."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("moonshine_cpp") is None:
        return []
    path = importlib.resources.files("moonshine_cpp") / "test-data" / "beckett.wav"
    return [str(path)] if path.is_file() else []


def choose(rows: list[dict], baseline: dict) -> dict:
    """Lowest validation WER within the forgetting (WER and style) and time budgets; if nothing is, the least
    forgetting: the smallest WER rise, then style kept before style lost, then validation WER."""
    def kept(r: dict) -> bool:
        return _style_kept(r, baseline)

    within = [r for r in rows if r["forget_wer"] - baseline["forget_wer"] <= FORGET_BUDGET + 1e-9
              and r["train_seconds"] <= TRAIN_BUDGET_S and kept(r)]
    if within:
        return min(within, key=lambda r: (r["valid_wer"], r["valid_loss"]))
    return min(rows, key=lambda r: (r["forget_wer"], not kept(r), r["valid_wer"]))


def _style_kept(row: dict, baseline: dict) -> bool:
    """Style kept: on the speech without a human reference, the forgetting verdict's thresholds against the base
    model's output (lora.style_metrics); on each clip with one (`--style-audio` clips with a `.txt` beside them),
    F1 against that reference at least the base model's own on that clip (pooled, the base model's unpunctuated
    first turn would hide a stop the tuned model adds in another clip). Rows of grids run before a check existed
    count as kept by it."""
    punct, caps = row.get("forget_punctuation_f1"), row.get("forget_capitalisation_f1")
    against_base = (punct is None or punct >= MIN_PUNCTUATION_F1) and (caps is None or caps >= MIN_CAPITALISATION_F1)
    against_human = all(tuned is None or base is None or tuned >= base - 1e-9
                        for key in ("human_punctuation_f1_per_clip", "human_capitalisation_f1_per_clip")
                        for tuned, base in zip(row.get(key) or [], baseline.get(key) or []))
    return against_base and against_human


def human_reference(path: str) -> str | None:
    """The human punctuated text of a style clip, from the `.txt` beside it (recipes/style_audio.py writes one)."""
    text = Path(path).with_suffix(".txt")
    return text.read_text(encoding="utf-8").strip() if text.is_file() else None


def style_scores(outputs: list[str], base_outputs: list[str], references: list[str | None]) -> dict:
    """Punctuation and capitalisation F1 of `outputs` (one per style clip): against the base model's outputs where
    a clip has no human reference, against the reference where it has one, pooled and per clip (None where no clip
    is of that kind, or a clip has no mark or capital on either side)."""
    plain = [i for i, ref in enumerate(references) if ref is None]
    human = [i for i, ref in enumerate(references) if ref is not None]

    def f1(score, truth: list[str], pred: list[str]) -> float | None:
        return score(truth, pred).f1 if truth else None

    return {"forget_punctuation_f1": f1(punctuation_f1, [base_outputs[i] for i in plain], [outputs[i] for i in plain]),
            "forget_capitalisation_f1": f1(capitalisation_f1, [base_outputs[i] for i in plain], [outputs[i] for i in plain]),
            "human_punctuation_f1": f1(punctuation_f1, [references[i] for i in human], [outputs[i] for i in human]),
            "human_capitalisation_f1": f1(capitalisation_f1, [references[i] for i in human], [outputs[i] for i in human]),
            "human_punctuation_f1_per_clip": [punctuation_f1([references[i]], [outputs[i]]).f1 for i in human],
            "human_capitalisation_f1_per_clip": [capitalisation_f1([references[i]], [outputs[i]]).f1 for i in human]}


def _f1(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _per_clip(row: dict) -> str:
    pairs = zip(row.get("human_punctuation_f1_per_clip") or [], row.get("human_capitalisation_f1_per_clip") or [])
    return ", ".join(f"{_f1(p)}/{_f1(c)}" for p, c in pairs) or "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(MODELS), required=True)
    parser.add_argument("--speech-dir", default="../shared/speech")
    parser.add_argument("--extra-speech-dir", default="",
                        help="more FSDD takes (../shared/speech-extra): train and validate on every take of the sweep's "
                             "speakers, as the recipe does; '' (default): the speech folder's 50 takes per speaker")
    parser.add_argument("--grid", choices=("default", "fast", "recipe", "placement", "consensus", "style", "distillation"), default="default")
    parser.add_argument("--style-audio", action="append", default=None,
                        help="real speech files for the style check only (repeatable; default: the moonshine-cpp "
                             "wheel's test-data/beckett.wav when installed); 'none' for the forgetting check alone")
    parser.add_argument("--output", default=None)
    parser.add_argument("--reuse", default=None, help="an earlier run's JSON: its measured points are taken, not retrained")
    parser.add_argument("--target-policy", choices=("styled", "sentence"), default="styled",
                        help="training targets: the recipe's default (styled: the base model's style carried over) or sentence case")
    args = parser.parse_args()
    from accelerate import Accelerator
    from accelerate.utils import set_seed


    resolved = resolve_model_id(MODELS[args.family])
    base, processor, family = load_base(resolved)
    if args.extra_speech_dir:  # every take of the sweep's speakers, as the recipe reads them
        folder = Path(tempfile.mkdtemp(prefix="digits_sweep_"))
        manifest, _, _ = digits_manifest([Path(args.speech_dir), Path(args.extra_speech_dir)], folder)
        speakers = [json.loads(line)["speaker"] for line in manifest.read_text(encoding="utf-8").splitlines()]
        choice = DataChoice(data_dir=args.speech_dir, manifest=str(manifest), dataset_samples=0,
                            eval_samples=sum(s in SWEEP_VALID for s in speakers))
    else:
        choice = DataChoice(data_dir=args.speech_dir, dataset_samples=150, eval_samples=50)
    data = resolve_data(replace(choice, train_speakers=SWEEP_TRAIN, eval_speakers=SWEEP_VALID), hub_ok=False)
    general = read_librispeech_dir(Path(args.speech_dir), ["dev-clean", "jfk"])
    joins = {p["join_clips"] for p in grid(args.family, args.grid)}
    joined_rows = {n: with_joined_clips(data.train, n, 42) for n in joins}
    replay_rows = [u for u in general if u.speaker in SWEEP_REPLAY]
    narrowband_rows = narrowband_copies(replay_rows) if any(p.get("replay_narrowband") for p in grid(args.family, args.grid)) else []
    policy = args.target_policy
    joined = {}  # (join_clips, style_consensus) -> training examples
    for consensus in sorted({p.get("style_consensus", False) for p in grid(args.family, args.grid)}):
        if policy == "styled":  # the base model's casing/punctuation on unstyled references
            style_rows([u for rows in joined_rows.values() for u in rows] + replay_rows + narrowband_rows,
                       lambda rows: transcribe_examples(base, processor, family, prepare_dataset(rows, processor, family, "raw"), 32),
                       TranscriptCache(f"{resolved.model_id_used}@{resolved.path}"), consensus=consensus)
        joined |= {(n, consensus): prepare_dataset(rows, processor, family, policy) for n, rows in joined_rows.items()}
    valid = prepare_dataset(data.eval, processor, family)
    replay = {False: prepare_dataset(replay_rows, processor, family, policy)}  # replay_narrowband -> examples
    if narrowband_rows:
        replay[True] = prepare_dataset(replay_rows + narrowband_rows, processor, family, policy)
    forget = prepare_dataset([u for u in general if u.speaker in FORGET_CHECK], processor, family)
    style_files = default_style_audio() if args.style_audio is None else [f for f in args.style_audio if f != "none"]
    style_extra = prepare_dataset([Utterance(f"style-{i}", "style", "", Path(f)) for i, f in enumerate(style_files)],
                                  processor, family, "raw")
    style_references = [None] * len(forget) + [human_reference(f) for f in style_files]  # one per style output
    precision, _ = resolve_precision(TrainConfig().mixed_precision, cpu=True)

    def measure(model, base_forget_outputs: list[str] | None = None) -> dict:
        v, f = assess(model, processor, family, valid, valid, 32), assess(model, processor, family, forget, forget, 8)
        outputs = Counter(u["hypothesis"] for u in v["samples"]).most_common(3)
        forget_outputs = [u["hypothesis"] for u in f["samples"]]
        style_outputs = forget_outputs + (transcribe_examples(model, processor, family, style_extra, 8) if style_extra else [])
        base_outputs = base_forget_outputs if base_forget_outputs is not None else style_outputs
        return {"valid_wer": v["wer"], "valid_loss": v["eval_loss"], "forget_wer": f["wer"]} \
            | style_scores(style_outputs, base_outputs, style_references) \
            | {"forget_outputs": style_outputs, "top_valid_outputs": [f"{text!r} x{n}" for text, n in outputs]}

    baseline = measure(base)
    done = json.loads(Path(args.reuse).read_text(encoding="utf-8"))["rows"] if args.reuse else []
    rows = []
    for point in grid(args.family, args.grid):
        earlier = [r for r in done if all(r.get(k) == v for k, v in point.items())]
        if earlier:  # measured by an earlier run of the same sweep (same data, seed and baseline)
            rows.append(earlier[0])
            continue
        set_seed(42)
        where = point["targets"]
        targets = family.default_target_modules if where == "all" else (family.attention_in(where),)
        model = attach_lora(copy.deepcopy(base), point["lora_r"], point["lora_alpha"], 0.05, targets)
        cfg = replace(TrainConfig(), batch_size=8, gradient_accumulation_steps=1, learning_rate=point["learning_rate"],
                      max_steps=point["max_steps"], checkpoint_every=0, replay_distillation=point.get("replay_distillation", 0.0))
        started = time.perf_counter()
        replayed = replay[point.get("replay_narrowband", False)]
        examples = mix_replay(joined[point["join_clips"], point.get("style_consensus", False)], replayed, point["replay_share"])
        source = example_source(examples, family, LoaderOptions(cfg.batch_size, seed=cfg.seed))
        source.base_rows = replay_mask((e.id for e in examples), replayed)  # for --replay-distillation
        train_lora(model, family, source, cfg, Accelerator(mixed_precision=precision, cpu=True), show_progress=False)
        seconds = time.perf_counter() - started
        rows.append(point | measure(model, baseline["forget_outputs"]) | {"train_seconds": seconds})
        print(rows[-1], flush=True)
    best = choose(rows, baseline)
    lines = [f"Digits sweep, {args.family} ({MODELS[args.family]}): train speakers {', '.join(SWEEP_TRAIN)} "
             f"({len(data.train)} utts), validation speaker {', '.join(SWEEP_VALID)} ({len(valid)} utts); replay from "
             f"{', '.join(SWEEP_REPLAY)} ({len(replay[False])} utts, repeated to the share); forgetting check "
             f"{', '.join(FORGET_CHECK)} ({len(forget)} utts); style check: those plus {len(style_extra)} file(s) "
             f"({', '.join(Path(f).name for f in style_files) or 'none'}). Baseline: validation WER {100 * baseline['valid_wer']:.1f}%, "
             f"loss {baseline['valid_loss']:.3f}; forgetting check WER {100 * baseline['forget_wer']:.1f}%. "
             f"batch 8, seed 42, precision {precision}. Winner (bold): lowest validation WER with the forgetting "
             f"check up by at most {100 * FORGET_BUDGET:.0f} point, its punctuation/capitalisation F1 against the base "
             f"model's output at least {MIN_PUNCTUATION_F1:g}/{MIN_CAPITALISATION_F1:g} on the speech without a human "
             f"reference and against the human reference at least the base model's on each of the "
             f"{sum(r is not None for r in style_references)} clip(s) with one (per clip, punct/caps: "
             f"{_per_clip(baseline)}), and training in at most "
             f"{TRAIN_BUDGET_S:.0f} s on this machine.", "",
             "| lr | rank | LoRA on | steps | replay | joined clips | valid WER | valid loss | forgetting check WER | "
             "punct F1 vs base | caps F1 vs base | punct / caps F1 vs human, pooled | per clip | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "**" if r is best else ""
        lines.append(f"| {r['learning_rate']:g} | {r['lora_r']} | {r['targets']} | {r['max_steps']} | {r['replay_share']:g}"
                     f"{' (+ 8 kHz copies)' if r.get('replay_narrowband') else ''} | "
                     f"{'up to ' + str(r['join_clips']) if r.get('join_clips', 1) > 1 else 'no'}"
                     f"{'; targets: style consensus' if r.get('style_consensus') else ''}"
                     f"{'; replay distilled to the base, weight %g' % r['replay_distillation'] if r.get('replay_distillation') else ''} | "
                     f"{mark}{100 * r['valid_wer']:.1f}%{mark} | {r['valid_loss']:.3f} | {100 * r['forget_wer']:.1f}% | "
                     f"{_f1(r.get('forget_punctuation_f1'))} | {_f1(r.get('forget_capitalisation_f1'))} | "
                     f"{_f1(r.get('human_punctuation_f1'))} / {_f1(r.get('human_capitalisation_f1'))} | {_per_clip(r)} | "
                     f"{r['train_seconds']:.0f} |")
    out = Path(args.output or f"recipes/results/sweep_{args.family}.md")
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {"baseline": baseline, "precision": precision, "style_files": style_files,
                                                 "style_references": style_references, "rows": rows, "best": best})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
