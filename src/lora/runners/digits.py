"""Recipe: adapt to a new domain (isolated spoken digits, narrow-band) on held-out speakers.

Trains on FSDD speakers 9201-9204 (all their takes) and evaluates on ALL recordings of 9205-9206
(speaker-disjoint) for Moonshine base and Whisper tiny.en, from the speech folder's fsdd/ and the
extra folder's (`--extra-speech-dir`, ../shared/speech-extra: takes 5-39), combined into one manifest
in the output root; the LibriSpeech + LJSpeech utterances of the speech folder are the canary for
forgetting (normalised + orthographic WER, punctuation/capitalisation F1 against the base model's
output: the forgetting verdict of `lora.style_metrics`). The held-out WER change is shown with the
utterance bootstrap and the speaker-clustered one (2 speakers: "too few speakers to generalise").
Hyper-parameters per family come from `recipes/digits_sweep.py` (run on the training
speakers only; table in plan.md). Digits are a closed vocabulary, so identical transcripts in
train and eval are expected and allowed; speakers never are.

    uv run lora-digits [--families moonshine,whisper] [--speech-dir ../shared/speech] [--extra-speech-dir ../shared/speech-extra]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.memory import prefer_jemalloc
from lora.core.outputs import write_json_atomic, write_text_atomic
from lora.data.records import list_subsets, read_librispeech_dir
from lora.families.moonshine import FAMILY as MOONSHINE
from lora.families.whisper import FAMILY as WHISPER
from lora.results import RealMetrics, read_result, to_dict
from lora.runners.real_small import run_locked
from lora.training_config import TrainConfig

TRAIN_SPEAKERS = "9201,9202,9203,9204"
EVAL_SPEAKERS = "9205,9206"
DIGITS_SUBSET = "fsdd"
RECIPE = TrainConfig(
    train_speakers=TRAIN_SPEAKERS, eval_speakers=EVAL_SPEAKERS, allow_shared_text=True,
    # every training take (dataset_samples=0); every held-out one (eval_samples: set from the manifest)
    dataset_samples=0, batch_size=8, gradient_accumulation_steps=1, eval_batch_size=32,
    checkpoint_every=0, quiet=True,
    # Without replay the canary showed forgetting (Moonshine: 6.2% -> 14.4%, short one-word outputs);
    # dev-clean + JFK general speech is mixed in, and the canary (test-clean + LJSpeech) stays unseen.
    replay_subsets="dev-clean,jfk", replay_share=0.15,
    # With replay alone Whisper still cut general sentences short after a number word (canary 4.9% ->
    # 14.7%: "Four" for "For although the Chinese..."): runs of 2-3 joined clips show that speech goes on.
    join_clips=3,
)
# Winners of recipes/digits_sweep.py (validation speaker 9204, never the evaluation speakers). Moonshine: the
# `--grid placement` winner over every take, LoRA on the encoder only (recipes/results/sweep_moonshine_placement.md:
# the all-attention point of the earlier `--grid recipe` validated at 9.8% but its punctuation/capitalisation F1 on
# the style check (dev-clean 1988 + the moonshine-cpp wheel's Beckett reading) fell to 0.78/0.82; encoder-only at
# 1e-3 kept 1.00/1.00 at 12.2%, and at 3e-3 validated at 6.5% but the forgetting check rose 2.5 points). Whisper:
# the `--grid fast` winner, LoRA on the decoder only (its frozen encoder, which always reads 30 s, then runs
# once per batch): all-attention LoRA trained for 694 s on an AVX2-only 2-core CPU, over the 5-minute budget.
# Moonshine's targets take each digit word's most common styled form (`--grid consensus`,
# recipes/results/sweep_moonshine_consensus.md: validation 11.8% -> 7.2%, forgetting check unchanged, style check
# 0.909 / 1.000); Whisper's stay per clip (`--grid consensus`, recipes/results/sweep_whisper_consensus.md: consensus
# validated at 9.0% against 8.8%, style check 0.800 / 0.800 against 0.815 / 0.909). Moonshine's replay clips are also distilled to the
# base model (`--grid distillation`, recipes/results/sweep_moonshine_distillation.md: weight 1 validated at 6.2%
# against 7.2% without, forgetting and style checks unchanged at 1.3% and 0.909 / 1.000; weight 4 at 7.2%, 1.000 / 1.000).
# Both Moonshine sweeps re-run after batch-invariant encoding pick the same points (recipes/results/
# sweep_moonshine_{placement,distillation}_batch_invariant.md); the recipe then missed caps F1 0.95 on seeds 42, 1, 2 (plan.md item 7).
# The distillation weight is 16 since the sweep's style check scores the conversation clips against their human
# punctuation, clip by clip (recipes/results/sweep_moonshine_distillation_human_style.md): weights 0 / 1 / 4 write a
# stop where the speaker paused ("At least. You know, ... down here. So, I"), punct F1 0.500 on that clip against
# the base model's 0.857; weight 16 keeps 0.889, at a validation cost (9.0% against 6.8% / 7.5% / 8.0%).
PER_FAMILY = {
    "moonshine": dict(model_id="moonshine-base-en", learning_rate=1e-3, max_steps=240,
                      target_modules=MOONSHINE.attention_in("encoder"), style_consensus=True, replay_distillation=16.0),
    "whisper": dict(model_id="whisper-tiny.en", learning_rate=3e-3, max_steps=60, target_modules=WHISPER.attention_in("decoder")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora digits", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--families", default="moonshine,whisper", help="comma-separated families to run")
    parser.add_argument("--speech-dir", default="../shared/speech", help="folder holding fsdd/ and LibriSpeech subsets")
    parser.add_argument("--extra-speech-dir", default="../shared/speech-extra",
                        help="more FSDD takes in the same layout (fsdd/), combined with the speech folder's; '' for none")
    parser.add_argument("--output-root", default="outputs", help="runs go to <root>/digits_<family>")
    parser.add_argument("--seed", type=int, default=RECIPE.seed,
                        help="random seed of every family's run (data order, LoRA init, dropout): another seed is another "
                             "draw of the same recipe, to see how far its figures move")
    parser.add_argument("--from-runs", action="store_true",
                        help="train nothing: build the table and --results from the finished runs' real_metrics.json "
                             "under --output-root (families run separately, e.g. in parallel)")
    parser.add_argument("--results", default="recipes/results/digits.json",
                        help="compact result file (the figures of the table, committed beside the recipe)")
    return parser


def digits_manifest(folders: list[Path], out: Path) -> tuple[Path, dict[str, int], int]:
    """One JSONL manifest (absolute paths) of the fsdd/ recordings of every folder; rows per folder, held-out rows."""
    import json

    lines, counts, seen, held = [], {}, set(), 0
    eval_speakers = set(EVAL_SPEAKERS.split(","))
    for folder in folders:
        if DIGITS_SUBSET not in list_subsets(folder):
            raise UserError(f"{folder}: no {DIGITS_SUBSET}/ subset; pass a speech folder holding FSDD recordings")
        rows = read_librispeech_dir(folder, [DIGITS_SUBSET])
        for u in rows:
            if u.id in seen:
                raise UserError(f"{folder}: recording {u.id} is in two speech folders; each take must be in one")
            seen.add(u.id)
            held += u.speaker in eval_speakers
            lines.append(json.dumps({"id": u.id, "path": str(Path(u.audio).resolve()), "text": u.text, "speaker": u.speaker}))
        counts[str(folder)] = len(rows)
    path = out / "digits_manifest.jsonl"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path, counts, held


def compact(m: RealMetrics) -> dict:
    """The figures the digits table shows, for the committed result file."""
    c = m.canary
    return {"model": m.model_id_used, "eval_utterances": m.wer_utterances, "eval_speakers": m.eval_speakers,
            "train_utterances": len(m.train_ids), "baseline_wer": m.baseline_wer, "tuned_wer": m.tuned_wer,
            "wer_delta_ci95": to_dict(m.wer_delta_ci95),
            "wer_delta_clustered_ci95": to_dict(m.wer_delta_clustered_ci95) if m.wer_delta_clustered_ci95 else None,
            "max_hyp_ref_word_ratio": m.max_hyp_ref_word_ratio, "outputs_over_2x_ref": m.outputs_over_2x_ref,
            "raw_insertions_before": m.raw_insertions_before, "raw_insertions_after": m.raw_insertions_after,
            "canary_utterances": c.utterances, "canary_wer_before": c.wer_before, "canary_wer_after": c.wer_after,
            "canary_orthographic_wer_before": c.orthographic_wer_before, "canary_orthographic_wer_after": c.orthographic_wer_after,
            "canary_punctuation_f1": c.punctuation_f1, "canary_capitalisation_f1": c.capitalisation_f1,
            "canary_verdict": c.verdict, "canary_verdict_reasons": c.verdict_reasons,
            "target_policy": m.target_policy, "target_style": to_dict(m.target_style) if m.target_style else None,
            "train_wall_seconds": m.train_wall_seconds, "wall_seconds": m.wall_seconds,
            "mixed_precision": m.mixed_precision, "mixed_precision_note": m.mixed_precision_note,
            "config": {k: m.config.get(k) for k in ("seed", "learning_rate", "max_steps", "target_modules", "batch_size", "join_clips",
                                                    "replay_distillation")}}


def table(results: dict[str, RealMetrics]) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def interval(ci):
        if ci is None or ci.delta is None:
            return "n/a"
        return f"{100 * ci.delta:+.1f} pts [{100 * ci.ci95[0]:+.1f}, {100 * ci.ci95[1]:+.1f}] {ci.verdict}"

    def f1(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = ["| family | held-out WER before -> after | change, utterance 95% CI | change, speaker-clustered 95% CI | "
             "outputs > 2x ref (max ratio) | canary WER before -> after | canary orthographic WER | punct F1 | caps F1 | "
             "canary verdict | train s | total s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        c = m.canary
        ratio = "n/a" if m.max_hyp_ref_word_ratio is None else f"{m.max_hyp_ref_word_ratio:.1f}"
        lines.append(f"| {name} | {pct(m.baseline_wer)} -> {pct(m.tuned_wer)} | {interval(m.wer_delta_ci95)} | "
                     f"{interval(m.wer_delta_clustered_ci95)} | {m.outputs_over_2x_ref} ({ratio}) | "
                     f"{pct(c.wer_before)} -> {pct(c.wer_after)} | {pct(c.orthographic_wer_before)} -> {pct(c.orthographic_wer_after)} | "
                     f"{f1(c.punctuation_f1)} | {f1(c.capitalisation_f1)} | {c.verdict} {'; '.join(c.verdict_reasons)} | "
                     f"{m.train_wall_seconds:.0f} | {m.wall_seconds:.0f} |")
    return "\n".join(lines)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    folders = [Path(args.speech_dir)] + ([Path(args.extra_speech_dir)] if args.extra_speech_dir else [])
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(PER_FAMILY))
    if unknown:
        raise UserError(f"--families: unknown {unknown}; choose from {', '.join(PER_FAMILY)}")
    results = {}
    if args.from_runs:
        counts = {str(f): len(read_librispeech_dir(f, [DIGITS_SUBSET])) for f in folders}
        results = {name: read_result(Path(args.output_root) / f"digits_{name}" / "real_metrics.json", RealMetrics) for name in families}
        families = []
    else:
        manifest, counts, held = digits_manifest(folders, Path(args.output_root))
        print("digits recordings: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    for name in families:
        cfg = replace(RECIPE, seed=args.seed, data_dir=args.speech_dir, manifest=str(manifest), eval_samples=held,
                      output_dir=f"{args.output_root}/digits_{name}", **PER_FAMILY[name])
        results[name] = run_locked(cfg)
    print()
    print(table(results))
    command = shlex.join(["lora", "digits", *(sys.argv[1:] if argv is None else argv)])  # as run (`make demo-digits`: its flags)
    if args.from_runs:
        command += " (families trained by separate `lora digits --families F` runs)"
    write_json_atomic(args.results, {"command": command, "recordings": counts,
                                     "results": {k: compact(m) for k, m in results.items()}})
    print(f"wrote {args.results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    prefer_jemalloc()  # re-executes with jemalloc where installed (lora-digits)
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
