"""`transformers.TrainingArguments` spellings accepted as aliases of our dashed option names.

People arrive with `--learning_rate 1e-4 --per_device_train_batch_size 8` from Trainer scripts.
`rewrite_hf_args(argv)` turns those spellings into ours (`--learning-rate`, `--batch-size`, ...)
before argparse sees them, so one parser serves both. The mapping is a plain table: an
underscore name maps to exactly one dashed name, `--name=value` keeps its value, and nothing
after a bare `--` is touched. Names not in the table are left alone for argparse to judge.
"""

from __future__ import annotations

from collections.abc import Sequence

# TrainingArguments / Trainer-script name -> our option name.
HF_ARG_ALIASES: dict[str, str] = {
    "--learning_rate": "--learning-rate",
    "--per_device_train_batch_size": "--batch-size",
    "--per_device_eval_batch_size": "--eval-batch-size",
    "--num_train_epochs": "--num-epochs",
    "--max_steps": "--max-steps",
    "--warmup_steps": "--warmup-steps",
    "--warmup_ratio": "--warmup-ratio",
    "--lr_scheduler_type": "--lr-scheduler-type",
    "--weight_decay": "--weight-decay",
    "--max_grad_norm": "--max-grad-norm",
    "--gradient_accumulation_steps": "--gradient-accumulation-steps",
    "--logging_steps": "--logging-steps",
    "--save_steps": "--checkpoint-every",
    "--eval_steps": "--eval-steps",
    "--report_to": "--report-to",
    "--resume_from_checkpoint": "--resume-from-checkpoint",
    "--seed": "--seed",
    "--output_dir": "--output-dir",
    "--metric_for_best_model": "--metric-for-best-model",
    "--early_stopping_patience": "--early-stopping-patience",
    "--run_name": "--run-name",
}
END_OF_OPTIONS = "--"


def hf_alias(token: str) -> str:
    """`token` with a TrainingArguments flag name replaced by ours (`--x_y=v` -> `--x-y=v`)."""
    name, eq, value = token.partition("=")
    ours = HF_ARG_ALIASES.get(name)
    if ours is None:
        return token
    return f"{ours}{eq}{value}"


def rewrite_hf_args(argv: Sequence[str]) -> list[str]:
    """argv with every TrainingArguments spelling rewritten to our name; the rest unchanged."""
    out: list[str] = []
    tokens = list(argv)
    for index, token in enumerate(tokens):
        if token == END_OF_OPTIONS:
            return out + tokens[index:]
        out.append(hf_alias(token) if token.startswith("--") else token)
    return out


def alias_help() -> str:
    """One line per alias, for a parser's epilog."""
    width = max(map(len, HF_ARG_ALIASES))
    lines = [f"  {hf:<{width}}  = {ours}" for hf, ours in HF_ARG_ALIASES.items()]
    return "TrainingArguments spellings accepted as aliases:\n" + "\n".join(lines)
