import numpy as np
import pytest
import torch

from lora.core.errors import UserError
from lora.data.records import Utterance, split_folder
from lora.data.resolve import DataChoice, resolve_data
from lora.data.selection import select_balanced, split_by_speaker, split_by_utterance
from lora.data.sources import hub_stream
from lora.data_loader import collate, length_grouped_batches, prepare_dataset


def _utts(speakers, per=3):
    return [Utterance(f"{s}-{i}", s, f"TEXT {s} {i}", np.zeros(1600, np.float32)) for s in speakers for i in range(per)]


def test_split_by_speaker_non_empty_disjoint_and_deterministic():
    utts = _utts(["a", "b", "c", "d", "e"])
    train, held = split_by_speaker(utts, seed=3)
    assert train and held
    assert not {u.speaker for u in train} & {u.speaker for u in held}
    assert len(train) + len(held) == len(utts)
    assert [u.id for u in held] == [u.id for u in split_by_speaker(utts, seed=3)[1]]


def test_split_by_speaker_evaluates_on_speakers_with_transcripts_of_their_own():
    """Digit speakers all say the same words: as eval speakers they would leave nothing to score once
    the transcripts training covers are dropped, so speakers with sentences of their own go first."""
    digits = [Utterance(f"{s}-{w}", s, w, np.zeros(1600, np.float32)) for s in "abcdef" for w in ("ONE", "TWO", "THREE")]
    for seed in range(10):
        train, held = split_by_speaker(digits + _utts(["g", "h"]), eval_fraction=0.2, seed=seed)
        assert {u.speaker for u in held} == {"g", "h"}, seed
        assert not {u.speaker for u in train} & {"g", "h"}


def test_split_by_speaker_needs_two_speakers_and_names_the_one_speaker_way_out():
    with pytest.raises(UserError, match="at least two speakers.*--allow-shared-speakers to hold out utterances"):
        split_by_speaker(_utts(["solo"]))


def test_split_by_utterance_keeps_each_transcript_on_one_side():
    utts = _utts(["solo"], per=12) + [Utterance("solo-again", "solo", "text solo 3.", np.zeros(1600, np.float32))]
    train, held = split_by_utterance(utts, seed=5)
    assert train and held and len(train) + len(held) == len(utts)
    assert len(held) == 3  # a quarter of the 12 distinct transcripts
    seen = {u.text.lower().rstrip(".") for u in train}
    assert not any(u.text.lower().rstrip(".") in seen for u in held)  # "TEXT solo 3" and its repeat stay together
    assert [u.id for u in held] == [u.id for u in split_by_utterance(list(reversed(utts)), seed=5)[1]]
    with pytest.raises(UserError, match="two different transcripts"):
        split_by_utterance(_utts(["solo"], per=1))


def test_split_by_utterance_keeps_overlapping_segments_of_a_recording_on_one_side():
    """Sliding-window segments of one long recording, each with its own transcript: held out by transcript alone,
    an eval segment's audio was half trained on. Overlapping segments (by 0.1 s or more) now stay together;
    segments that only touch, or overlap by a rounding, are split freely."""
    from lora.core.audio import Span

    def seg(i, start, end, path="talk.flac"):
        return Utterance(f"w{i}", "solo", f"window {i}", path, span=Span(start, end))

    windows = [seg(i, 10.0 * i, 10.0 * i + 15.0) for i in range(6)]  # 15 s windows every 10 s: a chain of overlaps
    apart = [seg(10 + i, 100.0 + 10.0 * i, 110.0 + 10.0 * i + 0.02) for i in range(8)]  # abutting (0.02 s rounding)
    other_file = [seg(20, 0.0, 15.0, "other.flac")]
    for seed in range(20):
        train, held = split_by_utterance(windows + apart + other_file, seed=seed)
        sides = {u.id: "held" if u in held else "train" for u in train + held}
        assert len({sides[u.id] for u in windows}) == 1, seed  # the chain of overlapping windows never split
    splits = {frozenset(u.id for u in split_by_utterance(windows + apart + other_file, seed=seed)[1]) for seed in range(20)}
    assert any(len({i for i in ids if i in {u.id for u in apart}}) not in (0, len(apart)) for ids in splits)  # apart: split
    whole = Utterance("whole", "solo", "the whole talk", "talk.flac")  # the whole file overlaps every segment of it
    assert len(split_by_utterance(windows + apart + [whole] + other_file, seed=1)[1]) in (1, len(windows + apart) + 1)


def test_one_speaker_manifest_holds_out_utterances_when_shared_speakers_are_allowed(speech_dir, tmp_path):
    import json

    rows = [u for u in resolve_data(DataChoice(data_dir=str(speech_dir), dataset_samples=0, eval_samples=0),
                                    hub_ok=False).train if u.speaker == "1988"]
    manifest = tmp_path / "me.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(u.audio), "text": u.text}) + "\n" for u in rows))
    with pytest.raises(UserError, match=f"^{manifest}: need at least two speakers.*found 1 \\(no speaker field\\)"):
        resolve_data(DataChoice(manifest=str(manifest), dataset_samples=0), hub_ok=False)
    data = resolve_data(DataChoice(manifest=str(manifest), dataset_samples=0, allow_shared_speakers=True), hub_ok=False)
    assert data.train and data.eval and len(data.train) + len(data.eval) <= len(rows)
    assert not {u.id for u in data.train} & {u.id for u in data.eval}


def test_select_balanced_round_robins_speakers():
    utts = _utts(["a"], per=20) + _utts(["b", "c"], per=2)
    chosen = select_balanced(utts, 6, seed=0)
    assert len(chosen) == 6
    assert {u.speaker for u in chosen} == {"a", "b", "c"}


def test_split_names_map_to_folders():
    assert split_folder("train.100") == "train-clean-100"
    assert split_folder("test") == "test-clean"
    assert split_folder("validation") == "dev-clean"
    assert split_folder("my-folder") == "my-folder"


def test_local_fallback_is_speaker_disjoint_and_leaves_test_out(speech_dir):
    data = resolve_data(DataChoice(data_dir=str(speech_dir), dataset_samples=20, eval_samples=6), hub_ok=False)
    assert len(data.train) == 20 and len(data.eval) == 6
    assert not {u.speaker for u in data.train} & {u.speaker for u in data.eval}
    assert not any(u.subset.startswith("test") for u in data.train + data.eval)
    assert data.train[0].samples().std() > 1e-3  # real audio, not silence


def test_named_speakers_for_recipes(speech_dir):
    choice = DataChoice(data_dir=str(speech_dir), dataset_samples=8, eval_samples=4,
                        train_speakers=("9201", "9202"), eval_speakers=("9205",))
    data = resolve_data(choice, hub_ok=False)
    assert {u.speaker for u in data.train} <= {"9201", "9202"} and {u.speaker for u in data.eval} == {"9205"}


def test_hub_stream_decodes_undecoded_audio_with_soundfile(monkeypatch, speech_dir):
    """The hub path with `datasets` mocked: audio arrives as encoded bytes and is decoded by us."""
    import datasets

    flac = next((speech_dir / "test-clean").rglob("*.flac"))
    calls = {}

    class FakeStream:
        def cast_column(self, name, feature):
            calls["cast"] = (name, feature.decode)
            return self

        def __iter__(self):
            for i in range(5):
                yield {"id": f"1-2-{i}", "speaker_id": 1, "text": "HELLO", "audio": {"bytes": flac.read_bytes(), "path": None}}

    def fake_load(name, config, split, streaming):
        calls["load"] = (name, config, split, streaming)
        return FakeStream()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = hub_stream("train.100", limit=3)
    assert calls == {"load": ("librispeech_asr", "clean", "train.100", True), "cast": ("audio", False)}
    assert len(rows) == 3 and rows[0].samples().dtype == np.float32 and rows[0].samples().std() > 1e-3


def test_prepare_dataset_and_collate(tiny_model_dir, librispeech_utterances):
    from lora.model_utils import load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id(str(tiny_model_dir)))
    examples = prepare_dataset(librispeech_utterances[:3], processor, family)
    batch = collate(examples, family)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape[0] == 3
    assert batch["labels"][0, len(examples[0].labels) - 1] == processor.tokenizer.eos_token_id
    inputs = batch[family.input_key]
    assert inputs.dtype == torch.float32 and inputs.shape[0] == 3
    if family.name == "moonshine":  # dynamic padding: as long as the longest clip, with a mask
        assert inputs.shape[1] == max(len(e.inputs) for e in examples)
        assert batch["attention_mask"].dtype == torch.long and batch["attention_mask"].shape == inputs.shape
    else:  # Whisper's encoder needs 30 s of log-mel frames
        assert inputs.shape[1:] == (80, 3000)
    assert float(model(**batch).loss) > 0


def test_length_grouped_batches_cover_everything_once():
    class E:
        def __init__(self, s):
            self.seconds = s

    examples = [E(s) for s in (5, 1, 3, 2, 4)]
    batches = length_grouped_batches(examples, 2, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        assert max(examples[i].seconds for i in b) - min(examples[i].seconds for i in b) <= 1


def test_an_eval_manifest_is_the_eval_set_and_every_training_speaker_trains(speech_dir, tmp_path):
    import json

    from lora.training_config import TrainConfig, validate

    rows = resolve_data(DataChoice(data_dir=str(speech_dir), dataset_samples=0, eval_samples=0), hub_ok=False)
    every = rows.train + rows.eval
    mine, test = [u for u in every if u.speaker != "3752"], [u for u in every if u.speaker == "3752"]
    for name, part in (("train.jsonl", mine), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps({"id": u.id, "audio": str(u.audio), "text": u.text,
                                                         "speaker": u.speaker}) + "\n" for u in part))
    data = resolve_data(DataChoice(manifest=str(tmp_path / "train.jsonl"), dataset_samples=0, eval_samples=0,
                                   eval_manifest=str(tmp_path / "test.jsonl"),
                                   quarantine_path=str(tmp_path / "quarantine.jsonl")), hub_ok=False)
    assert sorted(u.id for u in data.train) == sorted(u.id for u in mine)  # no speaker split off: all of them train
    assert sorted(u.id for u in data.eval) == sorted(u.id for u in test)  # all of the test set, none dropped
    capped = resolve_data(DataChoice(manifest=str(tmp_path / "train.jsonl"), dataset_samples=0, eval_samples=2,
                                     eval_manifest=str(tmp_path / "test.jsonl")), hub_ok=False)
    assert len(capped.eval) == 2

    assert TrainConfig().eval_rows == 8 and TrainConfig(eval_manifest="t.jsonl").eval_rows == 0
    assert TrainConfig(eval_manifest="t.jsonl", eval_samples=3).eval_rows == 3
    with pytest.raises(UserError, match="--eval-manifest is the eval set: drop --train-speakers/--eval-speakers"):
        validate(TrainConfig(eval_manifest="t.jsonl", eval_speakers="3752"))
