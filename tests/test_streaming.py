"""The streaming data path: duration-capped batch plans, resumable positions, worker processes that
decode real clips and quarantine bad ones on the fly, header-only preflight with its cache, repeats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lora.data.preflight import header_check, preflight
from lora.data.records import Utterance, read_librispeech_dir
from lora.data_loader import BatchPlan, ClipTable, LoaderOptions, OriginColumn, StringColumn, make_loader, plan_epoch


def test_plan_caps_clips_and_padded_seconds_and_covers_every_row_once():
    seconds = np.array([0.5, 9.0, 1.0, 3.0, 2.0, 8.0, 0.7, 4.0], dtype=np.float32)
    batches = plan_epoch(seconds, batch_size=3, max_batch_seconds=10.0)
    assert sorted(i for b in batches for i in b) == list(range(len(seconds)))
    for b in batches:
        assert len(b) <= 3
        longest = max(seconds[i] for i in b)
        assert len(b) * longest <= 10.0 or len(b) == 1  # a clip over the cap rides alone
    # Whisper-like padding: every clip costs 30 s, so a 60 s cap means 2 clips
    padded = plan_epoch(seconds, batch_size=8, max_batch_seconds=60.0, padded_seconds=lambda s: max(s, 30.0))
    assert all(len(b) <= 2 for b in padded)


def _bench(name: str):
    """A module of benchmarks/ (not a package), loaded by path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_equals_filling_clip_by_clip():
    rng = np.random.default_rng(3)
    seconds = np.concatenate([rng.uniform(0.2, 35.0, 3000), np.repeat(rng.uniform(0.5, 20, 40), 50)]).astype(np.float32)
    bucketed = lambda s: float(np.ceil(s * 4) / 4)  # noqa: E731 - a monotone padding like the length buckets
    for batch_size, cap, pad in [(8, 60.0, None), (256, 60.0, None), (10**6, 300.0, None), (3, 0.0, None),
                                 (16, 60.0, lambda s: 30.0), (64, 90.0, bucketed), (1, 60.0, None), (500, 10.0, None)]:
        expected = _bench("batch_plan").clip_by_clip(seconds, batch_size, cap, pad or float)
        assert plan_epoch(seconds, batch_size, cap, pad) == expected, (batch_size, cap)
    assert plan_epoch(np.zeros(0, np.float32), 4, 60.0) == []


def test_plan_order_is_deterministic_per_seed_and_epoch_and_composition_is_fixed():
    seconds = np.random.default_rng(0).uniform(0.3, 15, size=200).astype(np.float32)
    a = BatchPlan(seconds, 4, 20.0, seed=7)
    b = BatchPlan(seconds, 4, 20.0, seed=7)
    assert a.epoch(0) == b.epoch(0) and a.epoch(1) != a.epoch(0)
    assert sorted(map(tuple, a.epoch(0))) == sorted(map(tuple, a.epoch(3)))  # same batches, new order


def test_resume_skip_and_sharding_take_the_same_stream():
    from itertools import islice

    seconds = np.random.default_rng(1).uniform(0.3, 15, size=50).astype(np.float32)
    whole = list(islice(iter(BatchPlan(seconds, 3, seed=5)), 40))
    resumed = list(islice(iter(BatchPlan(seconds, 3, seed=5, skip=17)), 23))
    assert resumed == whole[17:]
    ranks = [list(islice(iter(BatchPlan(seconds, 3, seed=5, rank=r, world=2)), 20)) for r in (0, 1)]
    assert [x for pair in zip(*ranks) for x in pair] == whole


def test_a_plan_for_one_process_is_the_plan_made_for_it():
    """`for_process` (the loader reusing the plan the source counted batches with) = a plan made afresh."""
    from itertools import islice

    seconds = np.random.default_rng(2).uniform(0.3, 15, size=60).astype(np.float32)
    made = BatchPlan(seconds, 4, 20.0, seed=9)
    for rank, world, skip in [(0, 1, 0), (1, 2, 0), (0, 3, 5), (2, 3, 11)]:
        reused = made.for_process(rank, world, skip)
        assert list(islice(iter(reused), 30)) == list(islice(iter(BatchPlan(seconds, 4, 20.0, 9, rank, world, skip)), 30))
    assert (made.rank, made.world, made.skip) == (0, 1, 0)  # the plan it came from is unchanged


def test_columns_round_trip_strings_and_origins():
    values = ["a", "", "Grüße", "x" * 1000, "naïve – ok"]
    col = StringColumn(values)
    assert [col[i] for i in range(len(col))] == values
    origins = ["/m/manifest.jsonl:3", "/m/manifest.jsonl:17", "hub:librispeech_asr/clean/train", "/x/a.trans.txt:2"]
    oc = OriginColumn(origins)
    assert [oc[i] for i in range(len(oc))] == origins and len(oc.files) == 3


@pytest.fixture(scope="module")
def real_rows(speech_dir):
    return read_librispeech_dir(speech_dir, ["dev-clean"])[:6]


def _table_with_bad_file(real_rows, tmp_path):
    rows = list(real_rows)
    broken = tmp_path / "broken.flac"
    shutil.copy(rows[0].audio, broken)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # cut mid-stream: the header still reads, the decode fails
    rows.append(Utterance("broken-1", rows[0].speaker, rows[0].text, broken, origin=f"{tmp_path}/m.jsonl:7"))
    report = header_check(rows, quiet=True, cache=False)
    assert len(report.good) == 7  # the header of the cut file looks fine: the workers will find out
    return ClipTable.from_records(list(report.good))


def test_workers_load_real_clips_and_quarantine_a_bad_one_on_the_fly(real_rows, tiny_moonshine, tmp_path):
    from lora.model_utils import load_base, resolve_model_id

    _, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    table = _table_with_bad_file(real_rows, tmp_path)
    loader, plan = make_loader(table, processor, family, None, LoaderOptions(batch_size=2, num_workers=2, seed=3))
    seen, bad = set(), []
    it = iter(loader)
    for _ in range(plan.batches_per_epoch):
        batch = next(it)
        seen.update(batch.rows)
        bad += batch.bad
        if batch.rows:
            assert batch.tensors["input_values"].shape[0] == len(batch.rows)
            assert (batch.tensors["labels"] != -100).sum() == batch.tokens
    it._shutdown_workers()
    assert seen == set(range(6))  # every real clip loaded once in the epoch
    assert [(b.id, b.reason) for b in bad] == [("broken-1", "cannot decode")]
    assert bad[0].origin.endswith("m.jsonl:7")


def test_header_preflight_uses_its_cache_and_repeats_are_kept(real_rows, tmp_path, monkeypatch):
    import lora.data.preflight as pf

    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))
    rows = [Utterance(u.id, u.speaker, u.text, u.audio) for u in real_rows]
    repeat = Utterance(rows[0].id + "~r1", rows[0].speaker, rows[0].text, rows[0].audio)
    clash = Utterance("clash", rows[0].speaker, "ANOTHER TRANSCRIPT", rows[0].audio)
    first = header_check(rows + [repeat, clash], quiet=True)
    assert first.repeats == 1 and [b.reason for b in first.bad] == ["duplicate audio"]
    assert "another transcript" in first.bad[0].detail
    assert all(u.extra["seconds"] > 0 for u in first.good)

    def no_probe(*args, **kwargs):  # a second run over the same files must not open them again
        raise AssertionError("probed a cached file")

    monkeypatch.setattr(pf, "probe_audio", no_probe)
    again = [Utterance(u.id, u.speaker, u.text, u.audio) for u in real_rows]
    second = header_check(again, quiet=True)
    assert [u.extra["seconds"] for u in second.good] == [u.extra["seconds"] for u in first.good[:6]]


def test_full_preflight_decodes_and_header_mode_does_not(real_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))
    broken = tmp_path / "cut.flac"
    shutil.copy(real_rows[1].audio, broken)
    broken.write_bytes(broken.read_bytes()[:4000])
    row = [Utterance("cut", "s", "TEXT", broken)]
    assert len(header_check(row, quiet=True).good) == 1
    full = preflight([Utterance("cut", "s", "TEXT", broken)], min_good=0, quiet=True)
    assert [b.reason for b in full.bad] == ["cannot decode"]


def test_scale_manifest_rows_repeat_real_clips(speech_dir, tmp_path):
    from lora.scripts.scale_manifest import main

    out = tmp_path / "scale.jsonl"
    assert main(["--hours", "0.2", "--output", str(out), "--speech-dir", str(speech_dir)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["seconds"] for r in rows) >= 0.2 * 3600
    assert len({r["id"] for r in rows}) == len(rows)  # repeats have their own ids
    assert all(r["repeat_of"] == r["id"].split("~r")[0] for r in rows)
    originals = {r["repeat_of"] for r in rows}
    assert len(originals) == 326  # every real clip of the folder, none made up


def test_length_buckets_are_few_and_pad_at_most_an_eighth():
    from lora.families import bucket_length

    lengths = np.arange(8_000, 480_001, 7)  # 0.5 s .. 30 s of 16 kHz samples
    buckets = np.array([bucket_length(int(n)) for n in lengths])
    assert (buckets >= lengths).all() and (buckets <= lengths * 1.125).all()
    assert (np.diff(buckets) >= 0).all()  # a longer clip never gets a shorter bucket
    assert len(set(buckets.tolist())) <= 8 * 6  # 8 per doubling over ~6 doublings (vs 67,000 lengths)
    assert bucket_length(5) == 5 and bucket_length(131072) == 131072


def test_bucketed_batches_repeat_shapes_and_keep_masks_and_labels_exact(real_rows, tiny_moonshine):
    from lora.families import bucket_length
    from lora.model_utils import load_base, resolve_model_id

    _, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    table = ClipTable.from_records(list(header_check(list(real_rows), quiet=True, cache=False).good))
    plain, _ = make_loader(table, processor, family, None, LoaderOptions(batch_size=3, max_batch_seconds=40.0, seed=3))
    bucketed, plan = make_loader(table, processor, family, None,
                                 LoaderOptions(batch_size=3, max_batch_seconds=40.0, seed=3, length_buckets=True))
    for (a, b), rows in zip(zip(plain, bucketed), plan.epoch(0)):
        assert a.rows == b.rows == tuple(rows)
        x, y = a.tensors, b.tensors
        assert y["input_values"].shape[1] == bucket_length(x["input_values"].shape[1])
        assert y["labels"].shape[1] == bucket_length(x["labels"].shape[1])
        assert (y["attention_mask"].sum(1) == x["attention_mask"].sum(1)).all()  # padding is masked, clips unchanged
        width, labels = x["input_values"].shape[1], x["labels"].shape[1]
        assert (y["input_values"][:, :width] == x["input_values"]).all() and (y["input_values"][:, width:] == 0).all()
        assert (y["labels"][:, :labels] == x["labels"]).all() and (y["labels"][:, labels:] == -100).all()
        assert len(rows) * y["input_values"].shape[1] / 16000 <= 40.0 or len(rows) == 1  # the cap counts the bucket


def test_streaming_source_counts_the_batches_its_loader_makes(real_rows, tiny_moonshine):
    """With length buckets the loader's plan counts padded (bucketed) seconds: the source reports that plan's
    batches per epoch (what --num-epochs turns into steps), not the unbucketed one's."""
    from lora.model_utils import load_base, resolve_model_id
    from lora.training import streaming_source

    _, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    table = ClipTable.from_records(list(header_check(list(real_rows), quiet=True, cache=False).good))
    rng = np.random.default_rng(0)
    table.seconds = rng.uniform(3.0, 3.2, size=len(table)).astype(np.float32)  # 3.0-3.2 s: bucketed to 3.25 s or more
    options = LoaderOptions(batch_size=8, max_batch_seconds=19.4, seed=3, length_buckets=True)
    source = streaming_source(table, processor, family, None, options)
    _, plan = make_loader(table, processor, family, None, options)
    assert source.batches_per_epoch == plan.batches_per_epoch == len(plan.epoch(0))
    plain = streaming_source(table, processor, family, None, LoaderOptions(batch_size=8, max_batch_seconds=19.4, seed=3))
    assert plain.batches_per_epoch < source.batches_per_epoch  # 6 clips fit unbucketed, 5 bucketed


def test_a_stream_opened_early_is_the_one_training_asks_for():
    """`opened_now`: the stream a fresh run reads is opened once, up front, and handed over when asked for;
    any other (a resume's skip, another rank) or a second request opens its own; the source's attributes stay."""
    from lora.training import opened_now

    opened = []

    def source(rank, world, skip):
        opened.append((rank, world, skip))
        return iter([(rank, world, skip)])

    source.batches_per_epoch = 7
    early = opened_now(source, 1, 2)
    assert opened == [(1, 2, 0)] and early.batches_per_epoch == 7
    assert next(early(1, 2, 0)) == (1, 2, 0) and opened == [(1, 2, 0)]  # the one opened up front
    assert next(early(1, 2, 0)) == (1, 2, 0) and opened == [(1, 2, 0)] * 2  # asked again: a new one
    resumed = opened_now(source, 0, 1)
    assert next(resumed(0, 1, 5)) == (0, 1, 5) and opened[-2:] == [(0, 1, 0), (0, 1, 5)]
    assert next(resumed(0, 1, 0)) == (0, 1, 0) and len(opened) == 5  # the early one was let go


@pytest.mark.parametrize("name", ["moonshine", "whisper"])
def test_pcm16_hand_over_gives_the_cpu_paths_model_inputs(real_rows, name, request):
    """On a GPU the workers send 16-bit PCM plus lengths (a third of float32 + int64 mask's bytes) and the
    family makes the model inputs on the device. For 16-bit FLAC sources that is the CPU path's input bit for
    bit (Moonshine: samples and mask; Whisper: its log-mel within 1e-4)."""
    import torch

    from lora.core.audio import to_pcm16
    from lora.model_utils import load_base, resolve_model_id

    _, processor, family = load_base(resolve_model_id(str(request.getfixturevalue(f"tiny_{name}"))))
    table = ClipTable.from_records(list(header_check(list(real_rows), quiet=True, cache=False).good))
    options = LoaderOptions(batch_size=3, max_batch_seconds=60.0, seed=3)
    cpu, plan = make_loader(table, processor, family, None, options)
    gpu, _ = make_loader(table, processor, family, None, LoaderOptions(batch_size=3, max_batch_seconds=60.0, seed=3, features_on_device=True))
    for _, a, b in zip(range(plan.batches_per_epoch), cpu, gpu):  # the loaders run forever: one epoch
        assert a.rows == b.rows and b.tensors["raw_audio"].dtype == torch.int16
        made = family.device_features(processor, b.tensors)
        assert set(made) == set(a.tensors)
        assert (made["labels"] == a.tensors["labels"]).all()
        if name == "moonshine":
            assert (made["input_values"] == a.tensors["input_values"]).all()
            assert (made["attention_mask"] == a.tensors["attention_mask"]).all()
        else:
            assert float((made["input_features"] - a.tensors["input_features"]).abs().max()) < 1e-4
    x = np.array([0.5, -1.0, 0.99999, 1.5, -2.0, 3 / 32768], dtype=np.float32)
    assert to_pcm16(x).tolist() == [16384, -32768, 32767, 32767, -32768, 3]  # rounded, clipped to full scale


def test_a_batch_cap_below_two_clips_is_warned_of():
    from lora.families.moonshine.family import MOONSHINE
    from lora.families.whisper.family import WHISPER
    from lora.pipeline import one_clip_batches

    seconds = np.array([2.0, 3.0, 4.0], dtype=np.float32)
    capped = LoaderOptions(batch_size=8, max_batch_seconds=3.5)
    assert one_clip_batches(capped, 3, seconds, MOONSHINE) == (
        "--max-batch-seconds 3.5 holds no two clips (the shortest is 2.0 s as moonshine pads it): every micro-batch "
        "is one clip; raise it to at least 4 to batch them")
    assert "the shortest is 30.0 s as whisper pads it" in one_clip_batches(LoaderOptions(8, 20.0), 3, seconds, WHISPER)
    assert one_clip_batches(capped, 2, seconds, MOONSHINE) is None  # two clips batched somewhere
    assert one_clip_batches(LoaderOptions(batch_size=1, max_batch_seconds=3.5), 3, seconds, MOONSHINE) is None
    assert one_clip_batches(LoaderOptions(batch_size=8), 1, seconds, MOONSHINE) is None  # no cap


def test_workers_decode_only_each_rows_segment_and_the_table_keeps_the_spans(speech_dir, tiny_moonshine, tmp_path):
    """Segments of one real recording (NeMo offset + duration) through the table, its array form (the prepared-rows
    cache) and the loader's worker processes: each row's audio is its span of the file, to the sample."""
    import soundfile as sf

    from lora.data.manifest import read_source
    from lora.data_loader import ClipDataset
    from lora.model_utils import load_base, resolve_model_id

    path = speech_dir / "ljspeech/9001/1/9001-1-0000.flac"
    whole, rate = sf.read(path, dtype="float32")
    spans = [(0.5, 2.0), (3.0, 2.0), (5.0, 3.25)]
    manifest = tmp_path / "nemo.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(path), "offset": o, "duration": d, "text": f"words {i}"}) + "\n"
                                for i, (o, d) in enumerate(spans)))
    report = header_check(read_source(manifest).rows, quiet=True, cache=False)
    table = ClipTable.from_arrays(ClipTable.from_records(list(report.good)).to_arrays())
    assert table.seconds.tolist() == [2.0, 2.0, 3.25] and [table.span(i).start for i in range(3)] == [0.5, 3.0, 5.0]
    _, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    dataset = ClipDataset(table, processor, family)
    for i, (offset, duration) in enumerate(spans):
        first = round(offset * rate)
        expected = family.featurize(processor, whole[first:first + round(duration * rate)])
        assert np.array_equal(dataset[i].inputs, expected)
    loader, plan = make_loader(table, processor, family, None, LoaderOptions(batch_size=1, num_workers=1, seed=0))
    it = iter(loader)
    seconds = sorted(next(it).seconds for _ in range(plan.batches_per_epoch))
    it._shutdown_workers()
    assert seconds == [2.0, 2.0, 3.25]  # not the file's 9.655 s each
    plain = ClipTable.from_records([Utterance("a", "s", "t", path)])
    assert plain.span_starts is None and "span_starts" not in plain.to_arrays() and plain.record(0).span is None
