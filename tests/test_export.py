"""lora-export on tiny random models: merged adapter -> ONNX (Moonshine) / CTranslate2 (Whisper),
the exported runtime's greedy tokens equal the PyTorch model's on real utterances, the report is
written, and user mistakes give one-line errors. Real weights are exported by `make bench`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lora.core.errors import UserError

TWO_UTTERANCES = 2
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def utterances(librispeech_utterances):
    return sorted(librispeech_utterances, key=lambda u: u.id)[:TWO_UTTERANCES]


def make_adapter(model_dir, family_name, out_dir):
    """A LoRA adapter on a tiny model with non-zero B, so merging changes the weights."""
    import torch

    from lora.model_utils import attach_lora, load_base, resolve_model_id, save_adapter

    resolved = resolve_model_id(str(model_dir))
    model, _, family = load_base(resolved)
    torch.manual_seed(1)
    model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    save_adapter(model, out_dir, resolved.record() | {"family": family_name})
    return out_dir


def write_manifest(rows, path):
    path.write_text("".join(json.dumps({"id": u.id, "audio": str(u.audio), "text": u.text, "speaker": u.speaker}) + "\n"
                            for u in rows))
    return path


def pytorch_tokens(merged, audio) -> list[int]:
    """Greedy ids after the decoder prompt, up to and excluding end-of-text (as the runtimes return them)."""
    import torch

    with torch.no_grad():
        inputs = merged.family.pad_inputs([merged.family.featurize(merged.processor, audio)])
        out = merged.model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False, num_beams=1)[0].tolist()
    config = merged.model.generation_config
    for prompt_token in (config.decoder_start_token_id, getattr(config, "no_timestamps_token_id", None)):
        if out and out[0] == prompt_token:  # each prompt token once: a random model may repeat them
            out = out[1:]
    return out[: out.index(config.eos_token_id)] if config.eos_token_id in out else out


@pytest.mark.parametrize("fmt,family", [("onnx", "moonshine"), ("ct2", "whisper")])
def test_export_matches_pytorch_greedy_tokens(fmt, family, request, utterances, tmp_path):
    from lora.export import REPORT_FILE, ExportOptions, export_adapter
    from lora.export.merge import load_merged

    adapter = make_adapter(request.getfixturevalue(f"tiny_{family}"), family, tmp_path / "adapter")
    out = tmp_path / "exported"
    report = export_adapter(ExportOptions(adapter, fmt, out, manifest=str(write_manifest(utterances, tmp_path / "m.jsonl"))))
    assert (out / REPORT_FILE).is_file() and report["utterances"] == TWO_UTTERANCES
    assert set(report["wer"]) == {"pytorch_merged", "exported", "original_base_model"}

    merged = load_merged(adapter)
    _assert_adapter_changes_the_model(merged, request.getfixturevalue(f"tiny_{family}"), utterances[0].samples())
    for u in utterances:
        audio = u.samples()
        expected = pytorch_tokens(merged, audio)
        if fmt == "onnx":
            from lora.families.moonshine.onnx_runtime import OnnxMoonshine

            got = OnnxMoonshine(out).generate(audio, MAX_TOKENS)
        else:
            from lora.families.whisper.reference import Ct2Whisper

            got = list(Ct2Whisper(out).transcribe(audio, MAX_TOKENS).ids)
        assert got == expected, u.id


def _assert_adapter_changes_the_model(merged, base_dir, audio) -> None:
    """The merged weights are not the base model's: the same audio gives other logits (so an export
    that silently dropped the adapter would fail the token comparison against this model)."""
    import torch

    from lora.model_utils import load_base, resolve_model_id

    base, _, _ = load_base(resolve_model_id(str(base_dir)))
    inputs = merged.family.pad_inputs([merged.family.featurize(merged.processor, audio)])
    start = torch.tensor([[merged.model.generation_config.decoder_start_token_id]])
    with torch.no_grad():
        a = merged.model(**inputs, decoder_input_ids=start).logits
        b = base(**inputs, decoder_input_ids=start).logits
    assert not torch.allclose(a, b, atol=1e-4)


def test_export_user_errors(tiny_moonshine, tmp_path):
    from lora.export import ExportOptions, export_adapter

    with pytest.raises(UserError, match="no such directory"):
        export_adapter(ExportOptions(tmp_path / "missing", "onnx", tmp_path / "out"))
    adapter = make_adapter(tiny_moonshine, "moonshine", tmp_path / "adapter")
    with pytest.raises(UserError, match="unknown --format 'tflite'"):
        export_adapter(ExportOptions(adapter, "tflite", tmp_path / "out"))
    with pytest.raises(UserError, match="use --format onnx"):
        export_adapter(ExportOptions(adapter, "ct2", tmp_path / "out"))


def test_an_export_that_fails_its_check_leaves_the_earlier_export_whole(tiny_moonshine, utterances, tmp_path, monkeypatch):
    import lora.export
    from lora.export import REPORT_FILE, ExportOptions, export_adapter

    adapter = make_adapter(tiny_moonshine, "moonshine", tmp_path / "adapter")
    manifest = write_manifest(utterances[:1], tmp_path / "m.jsonl")
    out = tmp_path / "onnx"
    export_adapter(ExportOptions(adapter, "onnx", out, manifest=str(manifest), max_samples=1))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert REPORT_FILE in before

    def broken(*args, **kwargs):
        raise UserError("the exported model disagrees")

    monkeypatch.setattr(lora.export, "measure_parity", broken)
    with pytest.raises(UserError, match="disagrees"):
        export_adapter(ExportOptions(adapter, "onnx", out, manifest=str(manifest), max_samples=1))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not replaced, not half-written
    assert not list(tmp_path.glob(".onnx.tmp-*"))


def test_export_cli_one_line_error_and_help_without_torch(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lora.scripts.export", "--adapter-dir", str(tmp_path / "nope"),
                           "--format", "onnx", "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no such directory" in done.stderr
    code = ("import sys\nfrom lora.scripts import export\ntry:\n    export.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
