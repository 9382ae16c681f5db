"""Probe: the digits recipe's Whisper run with fewer held-out recordings scored, to read what its canary outputs
change into (plan.md "What is next", item 1). Every setting is `lora digits --families whisper`'s but
`eval_samples` (60 of the 800 held-out recordings: the held-out figure here is a spot check, the recipe's own
figure is `recipes/results/digits_whisper_a215301.json`). Writes the canary utterances whose output changed.

    uv run python recipes/digits_whisper_probe.py --output-root /tmp/dw \
        --results recipes/results/digits_whisper_canary_changes.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import replace
from pathlib import Path

from lora.core.cli import setup_logging
from lora.core.outputs import write_text_atomic
from lora.runners import digits
from lora.runners.real_small import run_locked

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SCORED = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True, help="scratch folder for the manifest and the run")
    parser.add_argument("--speech-dir", default=str(ROOT.parent / "shared" / "speech"))
    parser.add_argument("--extra-speech-dir", default=str(ROOT.parent / "shared" / "speech-extra"))
    parser.add_argument("--results", default=str(ROOT / "recipes" / "results" / "digits_whisper_canary_changes.json"))
    args = parser.parse_args()
    setup_logging(quiet=True)  # as `lora digits`: transformers' advisory warnings off
    out = Path(args.output_root)
    out.mkdir(parents=True, exist_ok=True)
    manifest, _, _ = digits.digits_manifest([Path(args.speech_dir), Path(args.extra_speech_dir)], out)
    cfg = replace(digits.RECIPE, data_dir=args.speech_dir, manifest=str(manifest), eval_samples=HELD_OUT_SCORED,
                  output_dir=str(out / "run"), **digits.PER_FAMILY["whisper"])
    m = run_locked(cfg)
    c = m.canary
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {
        "command": f"uv run python recipes/digits_whisper_probe.py --output-root {args.output_root}",
        "commit": commit,
        "held_out": {"utterances": m.wer_utterances, "baseline_wer": m.baseline_wer, "tuned_wer": m.tuned_wer},
        "canary": {"utterances": c.utterances, "wer_before": c.wer_before, "wer_after": c.wer_after,
                   "punctuation_f1": c.punctuation_f1, "capitalisation_f1": c.capitalisation_f1,
                   "verdict": c.verdict, "verdict_reasons": c.verdict_reasons},
        "target_style": {k: getattr(m.target_style, k) for k in ("rows", "styled_rows", "joined_rows", "coverage")},
        "canary_outputs_changed": [
            {"id": s["id"], "before": s["hypothesis_before"], "after": s["hypothesis_after"],
             "wer_before": s["wer_before"], "wer_after": s["wer_after"]}
            for s in c.samples if s["hypothesis_before"] != s["hypothesis_after"]],
    }
    write_text_atomic(args.results, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["canary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
