"""Optional-dependency errors, the `lora merge` command's registration and generation cap, and the
lazy `lora.load_adapter` (no torch at package import)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lora.core.errors import UserError
from lora.core.extras import require_extra
from lora.scripts.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def test_require_extra_names_the_extra_in_one_line():
    with pytest.raises(UserError) as err:
        require_extra("surely_not_installed_pkg", "report", "report plots")
    message = str(err.value)
    assert "\n" not in message and "'report' extra" in message and "lora[report]" in message
    assert require_extra("json", "core").dumps({}) == "{}"


def test_extras_and_dev_group_cover_the_optional_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert {"whisper", "moonshine", "export", "report", "tracking", "longform"} <= set(extras)
    core = " ".join(project["project"]["dependencies"])
    for optional in ("matplotlib", "tensorboard", "ctranslate2", "silero-vad", "moonshine-cpp", "psutil"):
        assert optional not in core
    dev = " ".join(project["dependency-groups"]["dev"])
    assert "lora[whisper,moonshine,export,report,tracking,longform]" in dev
    assert project["project"]["scripts"]["lora-merge"] == "lora.scripts.merge:main"
    assert COMMANDS["merge"][0] == "lora.scripts.merge"


def test_package_import_and_merge_help_stay_free_of_torch():
    code = ("import sys, lora, lora.scripts.merge as m; m.build_parser().format_help(); "
            "assert callable(lora.load_adapter); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_merge_refuses_a_missing_adapter_in_one_line(tmp_path, capsys):
    from lora.scripts import merge

    assert merge.main(["--adapter-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_generation_cap_follows_the_family_and_the_decoder_positions(tiny_model_dir):
    from lora.merging import PIPELINE_MAX_SECONDS, cap_generation
    from lora.model_utils import load_base, resolve_model_id

    model, _, family = load_base(resolve_model_id(str(tiny_model_dir)))
    cap = cap_generation(model, family)
    positions = getattr(model.config, "max_target_positions", None) or model.config.max_position_embeddings
    assert cap == min(family.max_new_tokens(PIPELINE_MAX_SECONDS), positions // 2)
    assert model.generation_config.max_new_tokens == cap


def test_eval_and_stt_take_a_dataset_instead_of_a_manifest():
    from lora.scripts import evaluate, run_stt

    args = evaluate.build_parser().parse_args(["--dataset", "data/af", "--text-column", "sentence", "--output", "e.json"])
    assert (args.dataset, args.text_column, args.manifest) == ("data/af", "sentence", None)
    args = run_stt.build_parser().parse_args(["--adapter-dir", "a", "--dataset", "d", "--dataset-split", "test", "--output", "o"])
    assert (args.dataset, args.dataset_split, args.audio_list) == ("d", "test", None)
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--dataset", "d", "--manifest", "m", "--output", "e.json"])
    # stt transcribes every source it is given (--audio, --audio-list and --dataset together)
    both = run_stt.build_parser().parse_args(["--adapter-dir", "a", "--dataset", "d", "--audio-list", "l", "--output", "o"])
    assert (both.dataset, both.audio_list) == ("d", "l")


def test_resume_from_checkpoint_and_scheduler_choice(tmp_path):
    import json as _json

    import torch

    from lora.checkpoint import check_resumable
    from lora.training import make_scheduler, resume_dir
    from lora.training_config import TrainConfig

    with pytest.raises(UserError, match="--resume-from-checkpoint"):
        resume_dir(TrainConfig(resume_from_checkpoint=str(tmp_path)), None)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(_json.dumps({"step": 3, "config": {"seed": 42}}))
    assert resume_dir(TrainConfig(resume_from_checkpoint=str(tmp_path / "checkpoint")), None) == tmp_path
    assert resume_dir(TrainConfig(), tmp_path) is None  # --resume not given
    check_resumable({"config": {"seed": 42}}, {"seed": 42, "lr_scheduler_type": "cosine"})  # new keys: no error
    with pytest.raises(UserError, match="seed"):
        check_resumable({"config": {"seed": 1}}, {"seed": 42})

    param = torch.nn.Parameter(torch.zeros(1))
    lrs = {}
    for kind in ("linear", "cosine", "constant_with_warmup"):
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = make_scheduler(optimizer, TrainConfig(lr_scheduler_type=kind, warmup_steps=2, max_steps=10))
        seen = []
        for _ in range(10):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        lrs[kind] = seen
    assert all(lrs[k][:3] == [0.0, 0.5, 1.0] for k in lrs)  # two warm-up steps, then the peak
    assert lrs["constant_with_warmup"][-1] == 1.0 and lrs["linear"][4] == pytest.approx(0.75)
    assert lrs["cosine"][4] > lrs["linear"][4]  # cosine stays high longer, then falls below linear
    assert lrs["cosine"][-1] < lrs["linear"][-1]
