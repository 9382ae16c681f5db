"""Training steps of one model with its attention as transformers runs it (SDPA under bf16 autocast) against
`lora.model_utils.float32_attention_on_cpu`, alternated in one process (sdpa, float32, float32, sdpa, x3) over
the bench's 14 real LibriSpeech utterances in length-grouped batches of 4, LoRA r 8 on all attention, after one
untimed pass each; each timing is a forward + backward of every batch.

    uv run python benchmarks/cpu_attention_steps.py moonshine-base-en
    uv run python benchmarks/cpu_attention_steps.py whisper-tiny.en
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import bench_config as bc
from lora.data_loader import collate, length_grouped_batches, prepare_dataset
from lora.model_utils import attach_lora, float32_attention_on_cpu, load_base, resolve_model_id
from speech import utterances


def main() -> None:
    model_id = sys.argv[1] if len(sys.argv) > 1 else bc.MOONSHINE
    model, processor, family = load_base(resolve_model_id(model_id))
    examples = prepare_dataset(utterances(bc.SPEECH_DIR, bc.TRAIN_SUBSETS), processor, family)
    model = attach_lora(model, 8, 16, 0.05, family.default_target_modules).train()
    batches = [collate([examples[i] for i in b], family) for b in length_grouped_batches(examples, 4)]
    bare = model.get_base_model()

    def epoch() -> float:
        start = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def use(name: str) -> None:
        if name == "sdpa":
            bare.set_attn_implementation("sdpa")
        else:
            float32_attention_on_cpu(model)

    use("fp32attn")
    epoch()
    use("sdpa")
    epoch()
    times = {"sdpa": [], "fp32attn": []}
    for name in ["sdpa", "fp32attn", "fp32attn", "sdpa"] * 3:
        use(name)
        times[name].append(epoch())
    for name, seconds in times.items():
        print(model_id, name, f"min {min(seconds):.2f} s median {statistics.median(seconds):.2f} s", [round(x, 2) for x in seconds])
    print(f"speedup (min) {min(times['sdpa']) / min(times['fp32attn']):.3f}, "
          f"(median) {statistics.median(times['sdpa']) / statistics.median(times['fp32attn']):.3f}")


if __name__ == "__main__":
    main()
