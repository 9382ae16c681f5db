"""TrainingArguments spellings -> our option names (pure argv rewriting)."""

from __future__ import annotations

import argparse

import pytest

from lora.hf_args import HF_ARG_ALIASES, alias_help, hf_alias, rewrite_hf_args

REQUIRED = {
    "--learning_rate": "--learning-rate",
    "--per_device_train_batch_size": "--batch-size",
    "--num_train_epochs": "--num-epochs",
    "--warmup_steps": "--warmup-steps",
    "--lr_scheduler_type": "--lr-scheduler-type",
    "--logging_steps": "--logging-steps",
    "--save_steps": "--checkpoint-every",
    "--eval_steps": "--eval-steps",
    "--report_to": "--report-to",
    "--resume_from_checkpoint": "--resume-from-checkpoint",
    "--gradient_accumulation_steps": "--gradient-accumulation-steps",
    "--max_steps": "--max-steps",
    "--seed": "--seed",
    "--output_dir": "--output-dir",
    "--metric_for_best_model": "--metric-for-best-model",
    "--early_stopping_patience": "--early-stopping-patience",
}


@pytest.mark.parametrize("hf,ours", sorted(REQUIRED.items()))
def test_required_aliases(hf, ours):
    assert HF_ARG_ALIASES[hf] == ours
    assert rewrite_hf_args([hf, "7"]) == [ours, "7"]


def test_table_is_consistent():
    for hf, ours in HF_ARG_ALIASES.items():
        assert hf.startswith("--") and ours.startswith("--")
        assert "_" not in ours, ours
    assert len(set(HF_ARG_ALIASES.values())) == len(HF_ARG_ALIASES), "two TrainingArguments names map to one option"


def test_equals_form_keeps_value():
    assert hf_alias("--learning_rate=3e-4") == "--learning-rate=3e-4"
    assert hf_alias("--resume_from_checkpoint=runs/a/checkpoint") == "--resume-from-checkpoint=runs/a/checkpoint"


def test_mixed_argv_and_values_untouched():
    argv = ["train", "--dataset", "data/af", "--per_device_train_batch_size", "4", "--eval-steps", "5",
            "--report_to", "tensorboard", "--output_dir", "some_dir/with_underscores", "--unknown_flag", "x"]
    assert rewrite_hf_args(argv) == ["train", "--dataset", "data/af", "--batch-size", "4", "--eval-steps", "5",
                                     "--report-to", "tensorboard", "--output-dir", "some_dir/with_underscores",
                                     "--unknown_flag", "x"]


def test_nothing_after_double_dash():
    assert rewrite_hf_args(["--max_steps", "3", "--", "--max_steps"]) == ["--max-steps", "3", "--", "--max_steps"]


def test_rewritten_argv_parses_with_dashed_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--resume-from-checkpoint")
    args = parser.parse_args(rewrite_hf_args(["--learning_rate=1e-4", "--per_device_train_batch_size", "8",
                                              "--save_steps", "10", "--resume_from_checkpoint", "out/ckpt"]))
    assert (args.learning_rate, args.batch_size, args.checkpoint_every, args.resume_from_checkpoint) == (1e-4, 8, 10, "out/ckpt")


def test_alias_help_lists_every_alias():
    text = alias_help()
    for hf, ours in HF_ARG_ALIASES.items():
        assert f"{hf}" in text and ours in text


def test_train_help_names_each_default_once():
    """`lora train --help`: a help naming its own default ("default: hub, then ...") got a second,
    misleading "(default: None)" appended."""
    from lora.runners.real_small import build_parser

    for action in build_parser()._actions:
        if action.option_strings and action.help and action.dest not in {"help", "config"}:
            assert action.help.count("default:") == 1, (action.option_strings, action.help)
