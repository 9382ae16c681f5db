"""Which training-target text style do the pretrained models already expect?

For each imported model and each policy of `lora.core.text.TARGET_POLICIES`, the mean cross-entropy per
label token (teacher forcing) of the pretrained model on the real LibriSpeech utterances of the
speech folder. The lowest loss is the style the model was trained on: fine-tuning on it starts
from the model's own habits instead of first re-learning casing. Writes a markdown table.

    uv run python benchmarks/target_policy.py [--speech-dir ../shared/speech] [--output benchmarks/results/target_policy.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lora.core.outputs import write_text_atomic
from lora.core.text import TARGET_POLICIES
from lora.data.records import read_librispeech_dir
from lora.data_loader import prepare_dataset
from lora.decoding import eval_loss
from lora.model_utils import load_base, resolve_model_id

MODELS = ("moonshine-base-en", "whisper-tiny.en")
# "styled" carries the base model's own transcript's style onto each reference, which a training run computes
# (lora.styled_targets); without it, as here, target_text writes it as "sentence": a column equal to that one
POLICIES = tuple(p for p in TARGET_POLICIES if p != "styled")


def measure(model_id: str, utterances) -> dict[str, float]:

    model, processor, family = load_base(resolve_model_id(model_id))
    return {policy: eval_loss(model, family, prepare_dataset(utterances, processor, family, policy))
            for policy in POLICIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-dir", default="../shared/speech")
    parser.add_argument("--output", default="benchmarks/results/target_policy.md")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model ids")
    args = parser.parse_args()

    utterances = read_librispeech_dir(Path(args.speech_dir), ["test-clean", "dev-clean"])
    lines = [f"Mean loss per label token of the pretrained models on {len(utterances)} real LibriSpeech utterances "
             f"({args.speech_dir} test-clean + dev-clean), by training-target text policy (lower is better).", "",
             "| model | " + " | ".join(POLICIES) + " |", "|---|" + "---|" * len(POLICIES)]
    for model_id in args.models.split(","):
        losses = measure(model_id, utterances)
        best = min(losses, key=losses.get)
        cells = [f"**{losses[p]:.3f}**" if p == best else f"{losses[p]:.3f}" for p in POLICIES]
        lines.append(f"| {model_id} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
