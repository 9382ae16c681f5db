"""merge_adapter: the merged folder computes what base + adapter computes, and the ASR pipeline loads it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from lora.core.errors import UserError
from lora.merging import MERGE_RECORD, RUN_METRICS_FILE, merge_adapter
from lora.scripts import merge

LIBRISPEECH = ("test-clean", "dev-clean")


def _utterances(speech_dir: Path, n: int, shortest: bool = False):
    """Real LibriSpeech utterances; the shortest ones keep random-weight decoding (runs to the cap) quick."""
    from lora.data.records import read_librispeech_dir

    rows = read_librispeech_dir(speech_dir, list(LIBRISPEECH))
    if shortest:
        rows = sorted(rows, key=lambda u: len(u.samples()))
    return rows[:n]


def _save_adapter(base: str, run_dir: Path, b_std: float, train_on=None) -> Path:
    """A LoRA adapter on `base` whose B matrices are non-zero (random, or a few real optimizer steps)."""
    import torch

    from lora.data_loader import collate, prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id, save_adapter

    resolved = resolve_model_id(base)
    model, processor, family = load_base(resolved)
    torch.manual_seed(0)
    model = attach_lora(model, r=4, alpha=8, dropout=0.0, target_modules=family.default_target_modules)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=b_std)
    if train_on:
        examples = prepare_dataset(train_on, processor, family)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model.train()
        for _ in range(2):
            loss = model(**collate(examples, family)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    info = resolved.record() | {"family": family.name, "target_modules": list(family.default_target_modules),
                                "train_ids": [u.id for u in train_on or []]}
    save_adapter(model, run_dir / "lora_adapter", info)
    return run_dir / "lora_adapter"


def _pipeline_texts(model_dir: Path, utterances, family, examples) -> list[str]:
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    return [asr(u.samples(), generate_kwargs=family.generate_kwargs(e.seconds))["text"].strip()
            for u, e in zip(utterances, examples)]


def test_merged_equals_adapter_on_real_audio(tiny_model_dir, speech_dir, tmp_path):
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    from lora.data_loader import collate, prepare_dataset
    from lora.decoding import transcribe_examples
    from lora.model_utils import load_with_adapter

    adapter = _save_adapter(str(tiny_model_dir), tmp_path / "run", b_std=0.5)
    (tmp_path / "run" / RUN_METRICS_FILE).write_text(json.dumps({"baseline_wer": 0.5, "tuned_wer": 0.25,
                                                                 "wer_delta_ci95": {"verdict": "improved"}}))
    out = merge_adapter(adapter, tmp_path / "merged")
    for name in ("config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
                 "processor_config.json", "tokenizer.json", "README.md", MERGE_RECORD):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()
    assert not list(tmp_path.glob(".merged.tmp-*"))

    peft_model, processor, family, _, _ = load_with_adapter(adapter)
    merged = AutoModelForSpeechSeq2Seq.from_pretrained(out, dtype=torch.float32).eval()
    # as lora loads any model (Moonshine: each clip of the padded batch encoded alone; transformers' own Moonshine
    # normalises over the batch's padding, so only its one-clip outputs would match)
    family.prepare_model(merged)
    merged_processor = AutoProcessor.from_pretrained(out)
    utterances = _utterances(speech_dir, 2, shortest=True)
    examples = prepare_dataset(utterances, processor, family)
    batch = collate(examples, family)
    with torch.inference_mode():
        expected = peft_model(**batch).logits
        base_only = peft_model.get_base_model()
        with peft_model.disable_adapter():
            unadapted = base_only(**batch).logits
        got = merged(**batch).logits
    assert not torch.allclose(expected, unadapted, atol=1e-3), "the adapter must change the outputs"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # Greedy text from random weights flips on 1e-6 near-ties, so adapter-vs-merged equality is the
    # logits check above; here the stock pipeline must decode the merged folder as our decoder does.
    merged_texts = transcribe_examples(merged, merged_processor, family, examples, batch_size=1, loop_guard=False)
    assert _pipeline_texts(out, utterances, family, examples) == merged_texts

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and family.name in card.data.tags
    assert "| before (base model) | 50.0% |" in card.text and "**improved**" in card.text
    record = json.loads((out / MERGE_RECORD).read_text())
    assert record["family"] == family.name and record["base"]["model_id_used"] == str(Path(tiny_model_dir).resolve())


def test_refuses_to_overwrite_other_folders(tiny_moonshine, tmp_path):
    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="exists and is not a merged model folder"):
        merge_adapter(adapter, tmp_path / "precious")
    with pytest.raises(UserError, match="is the adapter folder itself"):
        merge_adapter(adapter, adapter)
    first = merge_adapter(adapter, tmp_path / "merged")
    assert merge_adapter(adapter, first) == first  # a merged folder is replaced
    assert (first / "model.safetensors").is_file()


def test_a_disk_that_fills_while_merging_is_one_line_and_keeps_the_earlier_merge(tiny_moonshine, tmp_path, monkeypatch,
                                                                                capsys):
    """`lora merge` onto a full disk: safetensors' `SafetensorError: ... No space left on device (os error 28)`
    traceback, exit 1."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    first = merge_adapter(adapter, tmp_path / "merged")
    earlier = (first / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert merge.main(["--adapter-dir", str(adapter), "--output", str(first), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {first}: No space left on device; check that path (a folder where a folder is expected, permissions, "
        "free space)")
    assert (first / "model.safetensors").read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "run"]


def test_an_output_that_is_a_link_to_a_folder_is_written_there_and_stays_a_link(tiny_moonshine, tmp_path):
    """`--output merged` where `merged` links to a folder on a bigger disk: the merge replaced the link with a real
    folder here, left the earlier merge where the link pointed and the link as a hidden `.merged.old-PID` beside it."""
    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    target = merge_adapter(adapter, tmp_path / "disk" / "merged")
    (target / "model.safetensors").write_bytes(b"the earlier merge")
    (tmp_path / "merged").symlink_to(target)
    merge_adapter(adapter, tmp_path / "merged")
    assert (tmp_path / "merged").is_symlink() and (tmp_path / "merged").resolve() == target
    assert (target / "model.safetensors").read_bytes() != b"the earlier merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "merged", "run"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["merged"]


def test_another_runs_metrics_beside_a_copied_adapter_are_not_put_on_the_card(tiny_moonshine, tmp_path, caplog):
    """A Moonshine adapter copied into a Whisper run's folder: the merged Moonshine model's card said "family:
    whisper", carried the whisper tag and the Whisper run's WER figures."""
    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    (tmp_path / "run" / RUN_METRICS_FILE).write_text(json.dumps({
        "family": "whisper", "train_ids": ["other-run-0001"], "baseline_wer": 0.5, "tuned_wer": 0.25,
        "wer_delta_ci95": {"verdict": "improved"}}))
    with caplog.at_level(logging.WARNING, logger="lora"):
        out = merge_adapter(adapter, tmp_path / "merged")
    card = ModelCard.load(out / "README.md")
    assert "whisper" not in card.data.tags and "moonshine" in card.data.tags
    assert "50.0%" not in card.text and "**improved**" not in card.text
    assert [r.getMessage() for r in caplog.records if "is not the run of" in r.getMessage()] == [
        f"warning: {(tmp_path / 'run' / RUN_METRICS_FILE).resolve()} is not the run of {adapter} (its family and "
        "train_ids differ); the merged model's card shows no run figures"]


def test_the_current_folder_as_output_is_refused_before_any_work(tiny_moonshine, tmp_path, monkeypatch, capsys):
    """`lora merge --output .` in a new, empty folder: a `ValueError: PosixPath('.') has an empty name` traceback after
    the model had loaded (lora export and lora import the same)."""
    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for output in (".", str(here), ".."):
        assert merge.main(["--adapter-dir", str(adapter), "--output", output, "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --output {output}: is the current folder or one above it, which the output would replace as a whole; "
            "pass a new folder's name (e.g. out)"]
    assert list(here.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["here", "run"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tiny_moonshine, tmp_path, monkeypatch, capsys):
    """`lora merge --output ro/merged` under a read-only folder (and `lora export` alike) loaded and merged the model
    (about 10 s on the real weights) before failing. It is refused first, as a file given as the output folder
    already was. (As root the permission bits are not enforced, so the check's `os.access` says no for that folder.)"""
    from lora.core import outputs

    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == read_only else real_access(p, mode))
    monkeypatch.setattr("lora.merging.load_merged", lambda *a: pytest.fail("the model was loaded"))
    assert merge.main(["--adapter-dir", str(adapter), "--output", str(read_only / "merged"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {read_only / 'merged'}: cannot write in {read_only} (read-only or no permission); pick another path"]
    (tmp_path / "afile").write_text("mine")
    assert merge.main(["--adapter-dir", str(adapter), "--output", str(tmp_path / "afile"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {tmp_path / 'afile'}: exists and is not a merged model folder; choose another folder"]
    assert (tmp_path / "afile").read_text() == "mine" and list(read_only.iterdir()) == []


def test_unreadable_run_metrics_is_a_user_error(tiny_moonshine, tmp_path):
    adapter = _save_adapter(str(tiny_moonshine), tmp_path / "run", b_std=0.1)
    (tmp_path / "run" / RUN_METRICS_FILE).write_text("{not json")
    with pytest.raises(UserError, match="unreadable run metrics"):
        merge_adapter(adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
@pytest.mark.parametrize("import_name", ["moonshine-base-en", "whisper-tiny.en"])
def test_pipeline_on_real_merged_model(import_name, speech_dir, tmp_path):
    """Real weights, two optimizer steps on two real clips, merge, then the stock ASR pipeline."""
    from lora.data_loader import prepare_dataset
    from lora.decoding import transcribe_examples
    from lora.model_utils import load_with_adapter

    utterances = _utterances(speech_dir, 5)
    adapter = _save_adapter(import_name, tmp_path / "run", b_std=0.0, train_on=utterances[3:5])
    out = merge_adapter(adapter, tmp_path / "merged")
    peft_model, processor, family, _, _ = load_with_adapter(adapter)
    examples = prepare_dataset(utterances[:3], processor, family)
    ours = transcribe_examples(peft_model, processor, family, examples, loop_guard=False)
    assert all(ours), ours
    assert _pipeline_texts(out, utterances[:3], family, examples) == ours
    assert ModelCard.load(out / "README.md").data.base_model in {"UsefulSensors/moonshine-base", "openai/whisper-tiny.en"}
