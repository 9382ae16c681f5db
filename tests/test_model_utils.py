import json

import pytest

from conftest import TINY_OVERRIDES, build_tiny_model  # tests/ is on the path under pytest
from lora import model_utils
from lora.core.errors import UserError


@pytest.fixture
def offline(monkeypatch):
    model_utils.hub_reachable.cache_clear()
    monkeypatch.setattr(model_utils, "hub_reachable", lambda timeout=3.0: False)


def test_unreachable_hub_id_names_the_offline_choices(offline):
    with pytest.raises(UserError, match="cannot reach the Hugging Face hub.*moonshine-base-en.*whisper-tiny.en"):
        model_utils.resolve_model_id("UsefulSensors/moonshine-tiny")


def test_auto_falls_back_to_the_imported_model_and_says_so(offline, monkeypatch):
    monkeypatch.setattr(model_utils, "cached_import", lambda name, progress=None: f"/cache/{name}")
    resolved = model_utils.resolve_model_id("auto")
    assert resolved.record() == {"model_id_requested": "auto", "model_id_used": "moonshine-base-en",
                                 "model_source": "import", "model_path": "/cache/moonshine-base-en"}


def test_auto_uses_the_hub_when_reachable(monkeypatch):
    monkeypatch.setattr(model_utils, "hub_reachable", lambda timeout=3.0: True)
    resolved = model_utils.resolve_model_id("auto")
    assert (resolved.model_id_used, resolved.model_source) == ("UsefulSensors/moonshine-tiny", "hub")


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        model_utils.resolve_model_id(str(tmp_path))


def test_hub_offline_env_short_circuits(monkeypatch):
    model_utils.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_utils.hub_reachable() is False
    model_utils.hub_reachable.cache_clear()


def test_lora_attach_save_and_reload(tiny_model_dir, tmp_path):
    import torch

    resolved = model_utils.resolve_model_id(str(tiny_model_dir))
    model, processor, family = model_utils.load_base(resolved)
    model = model_utils.attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    model_utils.save_adapter(model, tmp_path / "lora_adapter", resolved.record() | {"train_ids": ["x"]})
    assert (tmp_path / "lora_adapter" / "adapter_model.safetensors").is_file()
    # safetensors writes 0600; the weights read like the adapter's other files (another user's server loads them)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "lora_adapter").iterdir()}
    assert modes["adapter_model.safetensors"] == modes["adapter_config.json"] != 0o600, modes
    reloaded, _, _, _, info = model_utils.load_with_adapter(tmp_path / "lora_adapter")
    assert info["train_ids"] == ["x"]
    saved = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    loaded = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_a_damaged_run_record_or_adapter_config_value_is_one_line(tmp_path):
    """lora_run.json that is not an object (was an AttributeError) or not JSON (was ignored, and with it the family
    check); adapter_config.json values PEFT cannot use (was a TypeError from inside PEFT)."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": "8", "lora_alpha": 16, "target_modules": ["q_proj"]}))
    assert model_utils.read_run_info(tmp_path) == {}  # no run record: an adapter PEFT saved alone
    (tmp_path / "lora_run.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"lora_run\.json: expected a JSON object .*or delete lora_run\.json"):
        model_utils.read_run_info(tmp_path)
    (tmp_path / "lora_run.json").write_text('{"family": "moonshine"')
    with pytest.raises(UserError, match=r"lora_run\.json: not readable JSON \(.*\); the adapter folder is damaged"):
        model_utils.read_run_info(tmp_path)
    with pytest.raises(UserError, match=r"adapter_config\.json: r is '8', expected a whole number >= 1; the adapter folder"):
        model_utils.read_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": [1]}))
    with pytest.raises(UserError, match=r"target_modules is \[1\], expected module names"):
        model_utils.read_adapter_config(tmp_path)


@pytest.mark.parametrize("other, message", [
    ("tiny_whisper", "a moonshine adapter, and .* is a whisper model; drop --model-id"),  # names and shapes agree here
    ("narrow_moonshine", r"does not fit .*size mismatch.*it was trained on .*: drop --model-id"),  # same family, other width
])
def test_an_adapter_on_a_base_it_does_not_fit_is_one_line(tiny_moonshine, moonshine_dir, other, message, request, tmp_path,
                                                           monkeypatch):
    """Another family, or the same family at another width: one line naming the base the adapter was trained on,
    not a traceback, and never an adapter applied where it merely happens to load."""
    resolved = model_utils.resolve_model_id(str(tiny_moonshine))
    model, _, family = model_utils.load_base(resolved)
    model = model_utils.attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    info = resolved.record() | {"family": family.name}
    model_utils.save_adapter(model, tmp_path / "lora_adapter", info)
    if other == "narrow_moonshine":  # the tiny Moonshine at half the width, with the real processor files
        monkeypatch.setitem(TINY_OVERRIDES, "moonshine", dict(TINY_OVERRIDES["moonshine"], hidden_size=32, intermediate_size=64))
        base = str(build_tiny_model(moonshine_dir, tmp_path / "narrow"))
    else:
        base = str(request.getfixturevalue(other))
    with pytest.raises(UserError, match=message):
        model_utils.load_with_adapter(tmp_path / "lora_adapter", base)
