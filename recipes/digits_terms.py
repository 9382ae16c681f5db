"""Your vocabulary, end to end on the digits recipe: which words to watch, and whether training taught them.

    uv run python recipes/digits_terms.py --output-root /tmp/dm [--reuse-run]

Steps, each timed from the start of its process:
  1. `lora digits --families moonshine` (the digits recipe: FSDD digits of some speakers, held-out ones apart);
     `--reuse-run` takes the run already under OUTPUT_ROOT instead;
  2. from its run's record, two manifests of the digits manifest's rows: the training speakers' and the
     held-out utterances (`eval_ids`);
  3. `lora check TRAIN --model-id moonshine-base-en --suggest-terms` (the words the base model misses, picked
     on the training speakers only);
  4. `lora eval --adapter-dir RUN/lora_adapter --manifest HELD_OUT --compare-base --terms T` with those
     suggested terms, and with the ten digit words (recipes/terms/digits.txt).

Writes recipes/results/digits_terms.json, and copies of the run's table (digits_terms_run.json), the suggested
terms (digits_terms_suggested.txt) and both eval.json files (digits_terms_eval_*.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lora.core.outputs import write_text_atomic  # noqa: E402

RESULTS = ROOT / "recipes" / "results"
DIGIT_TERMS = ROOT / "recipes" / "terms" / "digits.txt"


def timed(command: list[str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run(["uv", "run", "--no-sync", *command], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return {"command": "lora " + " ".join(command[1:]), "seconds": round(time.perf_counter() - started, 1),
            "stdout": [line for line in done.stdout.splitlines() if line.strip() and "%|" not in line][-3:]}


def split_manifests(root: Path) -> tuple[Path, Path, dict]:
    """The digits manifest's rows of the run's training speakers, and its held-out rows."""
    metrics = json.loads((root / "digits_moonshine" / "real_metrics.json").read_text())
    held = set(metrics["eval_ids"])
    rows = [json.loads(line) for line in (root / "digits_manifest.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["speaker"] in set(metrics["train_speakers"]) and r["id"] not in held]
    held_rows = [r for r in rows if r["id"] in held]
    paths = root / "train_digits.jsonl", root / "heldout.jsonl"
    for path, chosen in zip(paths, (train, held_rows)):
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in chosen))
    facts = {"train_rows": len(train), "train_speakers": sorted({r["speaker"] for r in train}),
             "held_out_rows": len(held_rows), "held_out_speakers": sorted({r["speaker"] for r in held_rows})}
    return paths[0], paths[1], facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True, help="where the digits run goes (or is, with --reuse-run)")
    parser.add_argument("--reuse-run", action="store_true", help="use the digits run already under --output-root")
    args = parser.parse_args()
    root = Path(args.output_root)
    steps = {}
    if not args.reuse_run:
        steps["digits"] = timed(["lora", "digits", "--families", "moonshine", "--output-root", str(root),
                                 "--results", str(root / "digits.json")])
        shutil.copy(root / "digits.json", RESULTS / "digits_terms_run.json")
    train, held_out, facts = split_manifests(root)
    suggested = root / "suggested_terms.txt"
    suggested.unlink(missing_ok=True)  # this recipe's own earlier suggestion (`--suggest-terms` keeps an existing file)
    steps["suggest"] = timed(["lora", "check", str(train), "--model-id", "moonshine-base-en", "--suggest-terms",
                              str(suggested), "--quiet", "--quarantine", str(root / "check_quarantine.jsonl")])
    adapter = root / "digits_moonshine" / "lora_adapter"
    evals = {}
    for name, terms in (("suggested", suggested), ("digit_words", DIGIT_TERMS)):
        out = root / f"eval_{name}" / "eval.json"
        steps[f"eval_{name}"] = timed(["lora", "eval", "--adapter-dir", str(adapter), "--manifest", str(held_out),
                                       "--terms", str(terms), "--compare-base", "--output", str(out), "--quiet"])
        evals[name] = json.loads(out.read_text())
        shutil.copy(out, RESULTS / f"digits_terms_eval_{name}.json")
    shutil.copy(suggested, RESULTS / "digits_terms_suggested.txt")
    result = {"data": facts, "steps": steps,
              "suggested_terms": [line for line in suggested.read_text().splitlines() if not line.startswith("#")],
              "terms": {name: e["terms"] for name, e in evals.items()},
              "held_out_wer": {name: {"base": e["base_model_wer"], "adapter": e["wer"]} for name, e in evals.items()}}
    write_text_atomic(RESULTS / "digits_terms.json", json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("data", "suggested_terms")} | {
        name: {k: t[k] for k in ("said", "recall_before", "recall_after", "term_error_rate_before", "term_error_rate_after")}
        for name, t in result["terms"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
