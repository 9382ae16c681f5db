"""The digits recipe's data: every FSDD take of both speech folders in one manifest, speakers kept apart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lora.core.errors import UserError
from lora.runners.digits import EVAL_SPEAKERS, TRAIN_SPEAKERS, digits_manifest

EXTRA = Path(os.environ.get("LORA_SPEECH_EXTRA_DIR", "../shared/speech-extra"))


@pytest.mark.skipif(not EXTRA.is_dir(), reason="../shared/speech-extra not present")
def test_both_folders_in_one_manifest(speech_dir, tmp_path):
    path, counts, held = digits_manifest([speech_dir, EXTRA], tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert counts == {str(speech_dir): 300, str(EXTRA): 2100} and len(rows) == 2400
    speakers = {r["speaker"] for r in rows}
    assert speakers == set(TRAIN_SPEAKERS.split(",")) | set(EVAL_SPEAKERS.split(","))
    assert held == sum(r["speaker"] in EVAL_SPEAKERS.split(",") for r in rows) == 800
    assert len({r["id"] for r in rows}) == 2400 and all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)


def test_a_take_in_two_folders_or_no_fsdd_is_refused(speech_dir, tmp_path):
    with pytest.raises(UserError, match="is in two speech folders"):
        digits_manifest([speech_dir, speech_dir], tmp_path)
    with pytest.raises(UserError, match="no fsdd/ subset"):
        digits_manifest([speech_dir / "jfk"], tmp_path)


def test_from_runs_needs_finished_runs(tmp_path, capsys):
    from lora.runners.digits import main

    code = main(["--from-runs", "--families", "moonshine", "--output-root", str(tmp_path), "--extra-speech-dir", "",
                 "--results", str(tmp_path / "r.json")])
    assert code == 2 and "real_metrics.json: cannot read" in capsys.readouterr().err
    assert main(["--families", "wav2vec", "--results", str(tmp_path / "r.json")]) == 2


def test_seed_reaches_every_familys_run(speech_dir, tmp_path, monkeypatch):
    """`lora digits --seed N`: another draw of the same recipe; each family's run takes it, nothing else changes."""
    from lora.runners import digits

    configs = []

    def fake_run(cfg):
        configs.append(cfg)
        raise UserError("stop here")  # the run itself is the recipe's own (tests/test_real_small_e2e.py)

    monkeypatch.setattr(digits, "run_locked", fake_run)
    for seed in (None, 7):
        argv = ["--families", "moonshine", "--speech-dir", str(speech_dir), "--extra-speech-dir", "",
                "--output-root", str(tmp_path), "--results", str(tmp_path / "r.json")]
        assert digits.main(argv + ([] if seed is None else ["--seed", str(seed)])) == 2
    default, seven = configs
    assert default.seed == digits.RECIPE.seed == 42 and seven.seed == 7
    assert {k: v for k, v in vars(default).items() if k != "seed"} == {k: v for k, v in vars(seven).items() if k != "seed"}
