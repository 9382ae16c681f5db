"""The house rules that keep the layout walkable: one `lora` command, every subcommand naming itself,
a model family is one folder plus one registry line, typed results without alias keys, checked
config files, and a run that stops on a non-finite loss."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import fields
from pathlib import Path

import pytest

from lora.core.errors import UserError
from lora.results import SCHEMA_VERSION, RealMetrics, ScaleFacts, WerChange, from_dict, read_result
from lora.scripts.commands import COMMANDS
from lora.training_config import TrainConfig, add_dataclass_args, config_from_args, load_config_file

ROOT = Path(__file__).resolve().parents[1]


def _lora(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora", *args], capture_output=True, text=True, cwd=ROOT)


def test_lora_help_lists_every_command_quickly():
    start = time.perf_counter()
    proc = _lora("--help")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in proc.stdout
    assert elapsed < 5  # the interpreter start included; `lora --help` itself imports no torch


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_help_names_itself_without_torch(command):
    code = ("import sys, importlib; from lora.scripts.commands import COMMANDS; m = importlib.import_module(COMMANDS[sys.argv[1]][0]); "
            "sys.argv = ['x', '--help']\ntry:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, cwd=ROOT)
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"usage: lora {command}"), first
    assert "TORCH False" in proc.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_option_is_one_line_and_exit_2(command):
    proc = _lora(command, "--no-such-option")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: lora {command}: ") and proc.stderr.endswith(f"; see lora {command} --help\n")


def test_version_is_one_line_and_exit_0():
    proc = _lora("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lora {importlib.metadata.version('lora')}"


def test_unknown_command_is_one_line_and_exit_2():
    proc = _lora("trian")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown command 'trian'" in proc.stderr


def test_a_new_family_is_one_folder_and_one_registry_line(tmp_path, monkeypatch):
    """A throwaway family in a temp folder: registered with one line, found by every lookup."""
    from lora import families
    from lora.export.formats import export_format
    from lora.importing import imports

    pkg = tmp_path / "toyfamily"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from lora.families.base import ExportFormat, ImportSpec, ModelFamily

        @dataclass(frozen=True)
        class ToyFamily(ModelFamily):
            def featurize(self, processor, samples):
                return samples
            def pad_inputs(self, inputs, length=None):
                return {}
            def label_ids(self, tokenizer, text, policy=None):
                return []

        FAMILY = ToyFamily(name="toy", input_key="input_values", default_target_modules=("q",), target_policy="raw")
        IMPORTS = (ImportSpec("toy-base", "toy", "toyfamily.importer", "toy-weights", "a toy"),)
        EXPORTS = (ExportFormat("toyfmt", "toy", "none", "none", "toyfamily:x", "toyfamily:y", "toyfamily:z"),)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(families.REGISTRY, "toy", "toyfamily")  # the one registry line
    families.family_package.cache_clear()
    try:
        assert families.family_for("toy").name == "toy"
        assert "toy-base" in imports()
        assert export_format("toyfmt", "toy").family == "toy"
        with pytest.raises(UserError, match="exports toy models, but this adapter is for a moonshine model"):
            export_format("toyfmt", "moonshine")
    finally:
        families.family_package.cache_clear()


def test_results_have_no_alias_keys_and_read_back_typed(tmp_path):
    names = {f.name for f in fields(RealMetrics)}
    assert "wer" not in names and "canary_wer_before" not in names and "cer" not in names
    assert {"baseline_wer", "tuned_wer", "train_loss", "baseline_eval_loss", "tuned_eval_loss"} <= names  # the seed's keys
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "wer": 0.1}))
    with pytest.raises(UserError, match=r"unknown key\(s\) \['wer'\]"):
        read_result(path, RealMetrics)
    path.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(UserError, match="schema_version 1"):
        read_result(path, RealMetrics)
    path.write_text("[1, 2]\n")  # valid JSON, not a result (was an AttributeError)
    with pytest.raises(UserError, match=r"m\.json: expected a JSON object, got a list; the file is damaged"):
        read_result(path, RealMetrics)
    change = from_dict(WerChange, {"delta": -0.1, "ci95": [-0.2, -0.05], "verdict": "improved"})
    assert change.verdict == "improved" and change.method == "utterance"
    assert {f.name for f in fields(ScaleFacts)} >= {"corpus_rows", "seconds_to_first_step", "quarantined_while_training"}


def _config(tmp_path, name: str, text: str, *flags: str) -> TrainConfig:
    import argparse

    path = tmp_path / name
    path.write_text(text)
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig)
    return config_from_args(TrainConfig, parser.parse_args(["--config", str(path), *flags]))


def test_config_files_are_type_checked_and_lists_accepted(tmp_path):
    cfg = _config(tmp_path, "a.toml", 'target_modules = ["q_proj", "v_proj"]\nmax_steps = 7\nresume = true\n', "--no-resume")
    assert cfg.target_modules == "q_proj,v_proj" and cfg.target_module_list == ("q_proj", "v_proj")
    assert cfg.max_steps == 7 and cfg.resume is False  # a boolean switched off by the flag
    with pytest.raises(UserError, match=r"b\.toml:1: option 'max_steps' expects a whole number, got str '40'"):
        _config(tmp_path, "b.toml", 'max_steps = "40"\n')
    assert _config(tmp_path, "c.json", '{"learning_rate": 3e-4, "dataset_samples": "all"}').dataset_samples == 0
    assert _config(tmp_path, "d.yaml", "lora_r: 4\neval_speakers: [a, b]\n").eval_speakers == "a,b"
    with pytest.raises(UserError, match="expects true or false"):
        _config(tmp_path, "e.yaml", "quiet: 1\n")
    with pytest.raises(UserError, match="invalid YAML"):
        _config(tmp_path, "f.yaml", "a: [1,\n")
    with pytest.raises(UserError, match="--learning-rate must be > 0"):
        _config(tmp_path, "g.toml", "learning_rate = 0.0\n")
    with pytest.raises(UserError, match="--replay-distillation needs --replay-subsets"):
        _config(tmp_path, "h.toml", "replay_distillation = 1.0\n")
    assert _config(tmp_path, "i.toml", 'replay_distillation = 1.0\nreplay_subsets = "dev-clean"\n').replay_distillation == 1.0
    assert _config(tmp_path, "j.toml", 'log_level = "debug"\n').log_level == "debug"
    with pytest.raises(UserError, match="--log-level must be one of DEBUG, INFO, WARNING, ERROR"):
        _config(tmp_path, "k.toml", 'log_level = "verbose"\n')  # was taken as INFO, unsaid


def test_config_errors_name_the_line_of_the_option(tmp_path):
    with pytest.raises(UserError, match=r"a\.toml:2: unknown option\(s\) \['learning_rat'\]; did you mean 'learning_rate'\?"):
        _config(tmp_path, "a.toml", "max_steps = 3\nlearning_rat = 0.1\n")
    with pytest.raises(UserError, match=r"b\.json:3: option 'max_steps' expects a whole number"):
        _config(tmp_path, "b.json", '{\n  "seed": 1,\n  "max-steps": "x"\n}\n')  # the file's own spelling
    with pytest.raises(UserError, match=r"c\.yaml:2: option 'lora_r' expects a whole number"):
        _config(tmp_path, "c.yaml", "seed: 1\nlora_r: abc\n")


def test_config_file_encoding_byte_order_mark_and_not_utf8(tmp_path):
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbfmax_steps = 3\n")  # Notepad's UTF-8 starts with a BOM
    assert load_config_file(tmp_path / "bom.toml", TrainConfig) == {"max_steps": 3}
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"max_steps": 3}')
    assert load_config_file(tmp_path / "bom.json", TrainConfig) == {"max_steps": 3}
    (tmp_path / "latin1.toml").write_bytes(b'max_steps = 3\nrun_name = "caf\xe9"\n')
    with pytest.raises(UserError, match=r"latin1\.toml:2: not UTF-8 \(byte 0xe9\); re-save the config file as UTF-8"):
        load_config_file(tmp_path / "latin1.toml", TrainConfig)


def test_nan_loss_stops_the_run_with_one_line(tiny_moonshine, librispeech_utterances, tmp_path):
    from accelerate import Accelerator

    from lora.data_loader import LoaderOptions, prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import example_source, train_lora

    model, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    examples = prepare_dataset(librispeech_utterances[:2], processor, family)
    model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    lora_a.data[0, 0] = float("nan")  # a diverged weight: every loss after it is NaN
    next(p for n, p in model.named_parameters() if "lora_B" in n).data.fill_(0.1)
    cfg = TrainConfig(max_steps=3, batch_size=1, gradient_accumulation_steps=1, checkpoint_every=0)
    with pytest.raises(UserError, match=r"step \d: the training loss is (nan|inf).*lower --learning-rate"):
        train_lora(model, family, example_source(examples, family, LoaderOptions(1)), cfg, Accelerator(cpu=True),
                   show_progress=False, run_dir=tmp_path)
