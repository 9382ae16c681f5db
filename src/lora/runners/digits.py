"""Recipe: adapt to a new domain (isolated spoken digits, narrow-band) on held-out speakers.

Trains on FSDD speakers 9201-9204 and evaluates on 9205-9206 (speaker-disjoint) for Moonshine base
and Whisper tiny.en; the LibriSpeech + LJSpeech utterances of the speech folder are the canary for
forgetting. Hyper-parameters per family come from `recipes/digits_sweep.py` (run on the training
speakers only; table in plan.md). Digits are a closed vocabulary, so identical transcripts in
train and eval are expected and allowed; speakers never are.

    uv run lora-digits [--families moonshine,whisper] [--speech-dir ../shared/speech]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from lora.core.cli import run_cli, setup_logging
from lora.core.outputs import write_json_atomic
from lora.families.whisper import FAMILY as WHISPER
from lora.results import RealMetrics, to_dict
from lora.runners.real_small import run_locked
from lora.training_config import TrainConfig

TRAIN_SPEAKERS = "9201,9202,9203,9204"
EVAL_SPEAKERS = "9205,9206"
RECIPE = TrainConfig(
    train_speakers=TRAIN_SPEAKERS, eval_speakers=EVAL_SPEAKERS, allow_shared_text=True,
    dataset_samples=200, eval_samples=100, batch_size=8, gradient_accumulation_steps=1, eval_batch_size=32,
    checkpoint_every=0, quiet=True,
    # Without replay the canary showed forgetting (Moonshine: 6.2% -> 14.4%, short one-word outputs);
    # dev-clean + JFK general speech is mixed in, and the canary (test-clean + LJSpeech) stays unseen.
    replay_subsets="dev-clean,jfk", replay_share=0.15,
    # With replay alone Whisper still cut general sentences short after a number word (canary 4.9% ->
    # 14.7%: "Four" for "For although the Chinese..."): runs of 2-3 joined clips show that speech goes on.
    join_clips=3,
)
# Winners of recipes/digits_sweep.py (validation speaker 9204, never the evaluation speakers). Whisper:
# the `--grid fast` winner, LoRA on the decoder only (its frozen encoder, which always reads 30 s, then runs
# once per batch): all-attention LoRA trained for 694 s on an AVX2-only 2-core CPU, over the 5-minute budget.
PER_FAMILY = {
    "moonshine": dict(model_id="moonshine-base-en", learning_rate=3e-3, max_steps=120),
    "whisper": dict(model_id="whisper-tiny.en", learning_rate=3e-3, max_steps=60, target_modules=WHISPER.attention_in("decoder")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="moonshine,whisper", help="comma-separated families to run")
    parser.add_argument("--speech-dir", default="../shared/speech", help="folder holding fsdd/ and LibriSpeech subsets")
    parser.add_argument("--output-root", default="outputs", help="runs go to <root>/digits_<family>")
    parser.add_argument("--results", default="recipes/results/digits.json",
                        help="compact result file (the figures of the table, committed beside the recipe)")
    return parser


def compact(m: RealMetrics) -> dict:
    """The figures the digits table shows, for the committed result file."""
    return {"model": m.model_id_used, "eval_utterances": m.wer_utterances, "eval_speakers": m.eval_speakers,
            "baseline_wer": m.baseline_wer, "tuned_wer": m.tuned_wer, "wer_delta_ci95": to_dict(m.wer_delta_ci95),
            "canary_utterances": m.canary.utterances, "canary_wer_before": m.canary.wer_before,
            "canary_wer_after": m.canary.wer_after, "train_wall_seconds": m.train_wall_seconds, "wall_seconds": m.wall_seconds,
            "config": {k: m.config[k] for k in ("learning_rate", "max_steps", "target_modules", "batch_size", "join_clips")}}


def table(results: dict[str, RealMetrics]) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = ["| family | held-out WER before -> after | change, 95% CI | verdict | canary WER before -> after | train s | total s |",
             "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        ci = m.wer_delta_ci95
        interval = f"{100 * ci.delta:+.1f} pts [{100 * ci.ci95[0]:+.1f}, {100 * ci.ci95[1]:+.1f}]"
        lines.append(f"| {name} | {pct(m.baseline_wer)} -> {pct(m.tuned_wer)} | {interval} | {ci.verdict} | "
                     f"{pct(m.canary.wer_before)} -> {pct(m.canary.wer_after)} | {m.train_wall_seconds:.0f} | {m.wall_seconds:.0f} |")
    return "\n".join(lines)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    results = {}
    for name in [f.strip() for f in args.families.split(",") if f.strip()]:
        cfg = replace(RECIPE, data_dir=args.speech_dir, output_dir=f"{args.output_root}/digits_{name}", **PER_FAMILY[name])
        results[name] = run_locked(cfg)
    print()
    print(table(results))
    write_json_atomic(args.results, {"command": "make demo-digits", "results": {k: compact(m) for k, m in results.items()}})
    print(f"wrote {args.results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
