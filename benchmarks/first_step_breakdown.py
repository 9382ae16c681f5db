"""Where the second run's first optimizer step goes (issue 14's "<= 10 s on the second run"), phase by phase.

Each measurement is a fresh child process on a manifest whose preflight and prepared-rows caches are warm
(run the bench's scale section, or `lora train` on it once, first):
  * `phases`: the runner's stages up to the end of the first optimizer step, timed one after another as `lora
    train` runs them (`start`: the session with its imports; `select_data`: selection from the caches;
    `load_model`; `train_batches`: the row table and loader; `open_stream`: the workers started;
    `eval_sets_and_attach`: LoRA attached; `first_step`: the optimizer, the first micro-batch and its step);
  * `imports`: the import alone of what the model load needs (torch and transformers first, then Moonshine's
    modeling module, which is where transformers imports torch._dynamo and torch.distributed.tensor);
  * `runs`: the bench's whole scale run (`tasks.scale_run`), its `seconds_to_first_step`, `--repeats` times.

    uv run python benchmarks/first_step_breakdown.py --manifest data/scale_100h.jsonl \\
        --preflight-cache PATH --prepared-cache DIR --output benchmarks/results/first_step_breakdown.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lora.core.outputs import write_json_atomic  # noqa: E402 - benchmarks/ is a folder of scripts, not a package

PHASES = r'''
import json, os, sys, time
t0 = time.perf_counter()
from lora import pipeline
from lora.training_config import TrainConfig
cfg = TrainConfig(manifest=sys.argv[1], max_steps=1, max_batch_seconds=60, batch_size=256, gradient_accumulation_steps=1,
                  eval_samples=2, canary_samples=2, wer_batches=1, eval_batch_size=2, checkpoint_every=0,
                  output_dir=sys.argv[2], quiet=True)
marks = {}
def mark(name, at=None):
    marks[name] = at if at is not None else time.perf_counter()
session = pipeline.start(cfg, True, t0); mark("start")
selected = pipeline.select_data(cfg); mark("select_data")
lm = pipeline.load_model(cfg, session); mark("load_model")
pipeline.style_targets(selected, lm, cfg)
options = pipeline.loader_options(cfg, "cpu")
source, table = pipeline.train_batches(selected, lm, cfg, options); mark("train_batches")
source = pipeline.stream_opened(source, cfg, session); mark("open_stream")
sets = pipeline.eval_sets(selected, lm, cfg)
model, _ = pipeline.attach(lm.model, cfg, lm.family); mark("eval_sets_and_attach")
result = pipeline.train(model, lm, source, cfg, session, sets); mark("first_step", result.first_step_wall)
last, out = t0, {}
for name, t in marks.items():
    out[name] = t - last
    last = t
print(json.dumps({"phases": out, "seconds_to_first_step": result.first_step_wall - t0,
                  "first_step_audio_seconds": result.history[0]["audio_seconds"], "workers": options.num_workers}))
sys.stdout.flush()
os._exit(0)  # the loader's worker is not shut down in order here; nothing else is left to write
'''

IMPORTS = r'''
import json, time
import lora  # as `lora train` runs: transformers' models index built once (lora.core.transformers_startup)
t0 = time.perf_counter()
import torch, transformers
t1 = time.perf_counter()
from transformers.models.moonshine.modeling_moonshine import MoonshineForConditionalGeneration
t2 = time.perf_counter()
print(json.dumps({"torch_and_transformers": t1 - t0, "moonshine_modeling_module": t2 - t1}))
'''


def child(code: str, *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """The JSON of the last line `code` prints in a fresh process (its stderr's tail on failure)."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/scale_100h.jsonl")
    parser.add_argument("--preflight-cache", required=True, help="the warm preflight cache (LORA_PREFLIGHT_CACHE)")
    parser.add_argument("--prepared-cache", required=True, help="the warm prepared-rows folder (LORA_PREPARED_CACHE)")
    parser.add_argument("--repeats", type=int, default=3, help="times each of `phases` and `runs` is measured")
    parser.add_argument("--output", default="benchmarks/results/first_step_breakdown.json")
    args = parser.parse_args()
    env = os.environ | {"LORA_PREFLIGHT_CACHE": args.preflight_cache, "LORA_PREPARED_CACHE": args.prepared_cache}
    run = ("import json, sys; sys.path.insert(0, 'benchmarks'); from tasks import scale_run; "
           "r = scale_run(sys.argv[1], sys.argv[2], 2, 60.0, sys.argv[3], prepared=sys.argv[4]); "
           "print(json.dumps(r['scale']))")
    result = {
        "manifest": args.manifest,
        "phases": [child(PHASES, args.manifest, "outputs/bench/first_step_phases", env=env) for _ in range(args.repeats)],
        "imports": child(IMPORTS, env=env),
        "runs": [child(run, args.manifest, "outputs/bench/first_step_runs", args.preflight_cache, args.prepared_cache, env=env)
                 for _ in range(args.repeats)],
    }
    write_json_atomic(args.output, result)
    print(json.dumps({"phases": [p["phases"] for p in result["phases"]], "imports": result["imports"],
                      "seconds_to_first_step": [r["seconds_to_first_step"] for r in result["runs"]]}, indent=1))


if __name__ == "__main__":
    main()
