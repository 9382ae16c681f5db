"""Style-preserving targets: the policy, the base-transcript cache, the rows it styles, canary style scores."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from lora.core.audio import Span
from lora.core.errors import UserError
from lora.core.text import has_style, target_text
from lora.data.clip_joining import with_joined_clips
from lora.data.records import read_librispeech_dir
from lora.data_loader import ClipDataset, ClipTable, LoadedBatch
from lora.families import pad_labels
from lora.styled_targets import (
    DrawStyler,
    TranscriptCache,
    attach_original_text,
    audio_identity,
    file_identities,
    file_identity,
    style_rows,
    style_scores,
    styled_reference,
)
from lora.training_config import TrainConfig, validate


def test_has_style():
    assert not has_style("FOR A FULL HOUR HE HAD PACED")  # LibriSpeech
    assert not has_style("zero") and not has_style("ZERO")  # FSDD words
    assert not has_style("DON'T STOP") and not has_style("WELL-KNOWN")  # apostrophes and hyphens are words
    assert has_style("Printing, in the only sense")  # LJSpeech
    assert has_style("and so, my fellow americans")  # punctuation alone is style


def test_styled_policy_keeps_styled_references_and_sentence_cases_the_rest():
    assert target_text("Printing, in the only sense", "styled") == "Printing, in the only sense"
    assert target_text("FOR A FULL HOUR I PACED", "styled") == "For a full hour I paced"


class Transcriber:
    """Stands in for the base model: returns given texts, counting the clips it is asked for."""

    def __init__(self, texts: dict[str, str]):
        self.texts, self.asked = texts, []

    def __call__(self, rows):
        self.asked += [u.id for u in rows]
        return [self.texts.get(u.id, "") for u in rows]


@pytest.fixture()
def rows(speech_dir):
    libri = read_librispeech_dir(speech_dir, ["test-clean"])[:2]
    digits = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.speaker == "9201"][:3]
    lj = read_librispeech_dir(speech_dir, ["ljspeech"])[:1]
    assert lj[0].text.isupper()  # the folder's trans.txt: UPPERCASE; the manifest keeps LJSpeech's own text
    assert attach_original_text(libri + digits + lj, speech_dir) == 1
    assert lj[0].extra["original_text"].startswith("Printing, in the only sense")
    return libri + digits + lj


def test_rows_get_the_base_style_and_the_cache_is_reused(rows, tmp_path):
    base = {u.id: f"{u.text.capitalize()}." for u in rows}  # what a base model writes: Sentence case + full stop
    base[rows[0].id] = "Something else entirely!"  # a clip the base model got wrong: no word matches
    first = Transcriber(base)
    style = style_rows(rows, first, TranscriptCache("model-a@/x", tmp_path))
    lj = rows[-1]
    assert sorted(first.asked) == sorted(u.id for u in rows[:-1])  # LJSpeech has style: never transcribed
    assert lj.extra["target"] == lj.extra["original_text"] and style.own_style_rows == 1 and style.styled_rows == 5
    assert rows[1].extra["target"] == base[rows[1].id]  # every word matched: the base style throughout
    assert rows[2].extra["target"] == base[rows[2].id]  # "ZERO" -> "Zero."
    wrong = rows[0]
    # no match and no near miss: lower case, the sentence start and the base model's final stop kept
    assert wrong.extra["target"] == wrong.text.lower().capitalize() + "!"
    words = sum(len(u.text.split()) for u in rows[:-1])
    assert style.reference_words == words and style.words_with_base_style == words - len(wrong.text.split())
    assert style.coverage == pytest.approx(style.words_with_base_style / words)
    assert style.transcribed == 5 and style.cache_hits == 0

    cache_file = tmp_path / os.path.basename(style.cache_path)
    saved = json.loads(cache_file.read_text())
    assert saved["model"] == "model-a@/x" and len(saved["transcripts"]) == 5

    for u in rows[:-1]:
        u.extra.pop("target", None)
    again = Transcriber({})
    style2 = style_rows(rows, again, TranscriptCache("model-a@/x", tmp_path))
    assert again.asked == [] and style2.cache_hits == 5 and rows[1].extra["target"] == base[rows[1].id]
    other = Transcriber(base)
    style_rows(rows, other, TranscriptCache("model-b@/y", tmp_path))  # another model: its own file, all transcribed
    assert len(other.asked) == 5


def test_repeats_of_a_clip_are_transcribed_once(rows, tmp_path):
    from dataclasses import replace

    repeats = [replace(rows[0], id=f"{rows[0].id}-r{k}", extra={}) for k in range(3)]
    asked = Transcriber({u.id: "Whatever." for u in repeats})
    style = style_rows(repeats, asked, TranscriptCache("model-r@/x", tmp_path))
    assert len(asked.asked) == 1 and style.transcribed == 1 and style.cache_hits == 0 and style.styled_rows == 3
    assert len({u.extra["target"] for u in repeats}) == 1


def test_the_audio_identity_changes_with_the_file(tmp_path, speech_dir):
    src = next((speech_dir / "fsdd").rglob("*.flac"))
    copy = tmp_path / "clip.flac"
    copy.write_bytes(src.read_bytes())
    u = read_librispeech_dir(speech_dir, ["fsdd"])[0]
    u.audio = copy
    before = audio_identity(u)
    os.utime(copy, ns=(1, 1))
    assert audio_identity(u) != before and audio_identity(u).startswith(f"file:{copy.resolve()}|")


def test_concurrent_runs_merge_into_the_cache(tmp_path):
    a, b = TranscriptCache("m", tmp_path), TranscriptCache("m", tmp_path)
    a.put("k1", "One.")
    b.put("k2", "Two.")
    a.save()
    b.save()
    assert TranscriptCache("m", tmp_path).entries == {"k1": "One.", "k2": "Two."}


def test_joined_clips_join_their_parts_targets(speech_dir, tmp_path):
    digits = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.speaker == "9202"][:4]
    joined = with_joined_clips(digits, 3, seed=1)
    assert len(joined) > len(digits)
    base = {u.id: u.text.capitalize() + "." for u in digits}
    transcriber = Transcriber(base)
    style = style_rows(joined, transcriber, TranscriptCache("m", tmp_path))
    assert sorted(transcriber.asked) == sorted(base)  # joined audio is never transcribed
    for u in joined[len(digits):]:
        assert u.extra["target"] == " ".join(base[i] for i in u.extra["joined_from"])
    assert style.joined_rows == len(joined) - len(digits)


def test_a_text_spoken_on_several_clips_gets_its_most_common_style(speech_dir, tmp_path):
    from dataclasses import replace

    nines = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.text == "NINE"][:5]  # five takes, several speakers
    assert len({u.audio for u in nines}) == 5
    heard = ["Nine.", "", "Or?", "Nine.", "Eight,"]  # what the base model wrote for each take
    base = {u.id: text for u, text in zip(nines, heard, strict=True)}
    once = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.text == "ONE"][:2]  # two clips: below the minimum
    base |= {once[0].id: "One.", once[1].id: "Won,"}
    repeats = [replace(nines[1], id=f"{nines[1].id}-r{k}", extra={}) for k in range(4)]  # one clip repeated: one vote
    rows = nines + once + repeats
    per_clip = style_rows(rows, Transcriber(base), TranscriptCache("m", tmp_path))  # the default: each clip's own
    assert [u.extra["target"] for u in nines] == ["Nine.", "nine", "Nine?", "Nine.", "Nine"] and per_clip.consensus_rows == 0
    style = style_rows(rows, Transcriber(base), TranscriptCache("m", tmp_path), consensus=True)
    assert {u.extra["target"] for u in nines + repeats} == {"Nine."}  # "nine", "Nine?", "Eight," -> the majority's form
    assert style.consensus_rows == 3 + len(repeats)  # the take heard as "" counts once however often it is repeated
    assert [u.extra["target"] for u in once] == ["One.", "One,"]  # two clips decide nothing: each keeps its own
    joined = with_joined_clips(nines[:3], 3, seed=1)
    style_rows(joined, Transcriber(base), TranscriptCache("m", tmp_path), consensus=True)
    assert {u.extra["target"] for u in joined[3:]} <= {"Nine. Nine.", "Nine. Nine. Nine."}  # joined clips carry it too


def test_the_loader_trains_on_the_target(speech_dir, tiny_moonshine):
    from transformers import AutoProcessor

    from lora.families.moonshine.family import MOONSHINE

    processor = AutoProcessor.from_pretrained(tiny_moonshine)
    rows = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.speaker == "9203"][:2]
    rows[0].extra["target"] = "Zero, zero."
    table = ClipTable.from_records(rows)
    assert table.record(0).extra == {"target": "Zero, zero."} and table.record(1).extra == {}
    loaded = ClipDataset(table, processor, MOONSHINE, None)
    assert loaded[0].labels == MOONSHINE.label_ids(processor.tokenizer, "Zero, zero.")
    assert loaded[1].labels == MOONSHINE.label_ids(processor.tokenizer, rows[1].text)


def test_canary_style_scores():
    refs = ["FOR A FULL HOUR HE HAD PACED", "Printing, in the only sense."]
    base = ["For a full hour, he had paced.", "Printing, in the only sense."]
    assert styled_reference(refs[0], base[0]) == base[0] and styled_reference(refs[1], "x") == refs[1]
    same = style_scores(refs, base, base)
    assert same["orthographic_wer_before"] == 0.0 == same["orthographic_wer_after"]
    assert same["punctuation_f1"] == 1.0 and same["capitalisation_f1"] == 1.0
    flat = style_scores(refs, base, ["for a full hour he had paced", "printing in the only sense"])
    assert flat["orthographic_wer_after"] == pytest.approx(5 / 12)  # For, hour, paced, Printing, sense.
    assert flat["punctuation_f1"] == 0.0 and flat["capitalisation_f1"] == 0.0
    loop = style_scores(refs, base, [base[0] + " paced paced paced", base[1]])
    assert loop["raw_insertions_after"] == 3 and loop["raw_insertions_before"] == 0


def test_the_canary_verdict_in_the_pipeline(speech_dir):
    """`pipeline.canary_result`: style figures against the base output, LJSpeech scored in its own orthography."""
    from lora.evaluation import score
    from lora.pipeline import canary_result

    canary = read_librispeech_dir(speech_dir, ["test-clean"])[:1] + read_librispeech_dir(speech_dir, ["ljspeech"])[1:2]
    attach_original_text(canary, speech_dir)
    lj = canary[1].extra["original_text"]  # "in being comparatively modern."
    base_hyps = [canary[0].text.capitalize() + ".", lj[0].upper() + lj[1:]]
    flat_hyps = [h.lower().rstrip(".") for h in base_hyps]
    ids, refs = [u.id for u in canary], [u.text for u in canary]

    def measured(hyps):
        return {**score(ids, refs, hyps), "eval_loss": 1.0}

    same = canary_result(canary, measured(base_hyps), measured(base_hyps), None)
    assert same.verdict == "pass" and same.verdict_reasons == [] and same.punctuation_f1 == 1.0
    assert same.orthographic_wer_before == same.orthographic_wer_after > 0  # LJSpeech's own "in" vs the base's "In"
    flat = canary_result(canary, measured(base_hyps), measured(flat_hyps), None)
    assert flat.wer_after == flat.wer_before  # the normalised WER does not see it ...
    assert flat.verdict == "fail" and flat.punctuation_f1 == 0.0 and flat.capitalisation_f1 == 0.0  # ... the verdict does
    assert [r.split(" ")[0] for r in flat.verdict_reasons] == ["orthographic", "punctuation", "capitalisation"]


def test_a_large_corpus_leaves_its_misses_to_be_styled_as_drawn(rows, tmp_path):
    base = {u.id: f"{u.text.capitalize()}." for u in rows}
    cache = TranscriptCache("model-d@/x", tmp_path)
    cache.put(audio_identity(rows[1]), base[rows[1].id])  # one clip styled by an earlier run
    cache.save()
    asked = Transcriber(base)
    style = style_rows(rows, asked, cache, on_draw_over=0)
    assert asked.asked == []  # nothing transcribed before the first step
    assert rows[1].extra["target"] == base[rows[1].id] and rows[-1].extra["target"] == rows[-1].extra["original_text"]
    assert all("target" not in u.extra for u in (rows[0], *rows[2:-1]))
    assert style.on_draw and style.pending_rows == 4 and style.styled_rows == 5 and style.own_style_rows == 1
    assert style.cache_hits == 1 and style.transcribed == 0

    for u in rows:
        u.extra.pop("target", None)
    small = style_rows(rows, Transcriber(base), TranscriptCache("model-d@/x", tmp_path), on_draw_over=5)
    assert not small.on_draw and small.transcribed == 4  # 5 distinct clips to style: not over 5, styled up front
    for u in rows:
        u.extra.pop("target", None)
    agreed = style_rows(rows, Transcriber(base), TranscriptCache("model-e@/x", tmp_path), consensus=True, on_draw_over=0)
    assert not agreed.on_draw and agreed.transcribed == 5  # a consensus needs every clip's transcript first


def _labels(text: str) -> list[int]:
    return [ord(c) for c in text]  # stands in for the tokenizer: one id per character


def test_the_draw_styler_transcribes_each_clip_once_and_relabels_the_batch(rows, tmp_path):
    from dataclasses import replace

    repeat = replace(rows[0], id=f"{rows[0].id}-again", extra={})  # the same clip under a second id
    corpus = [*rows, repeat]
    base = {u.id: f"{u.text.capitalize()}." for u in corpus}
    style = style_rows(corpus, Transcriber(base), TranscriptCache("model-s@/x", tmp_path), on_draw_over=0)
    assert style.pending_rows == 6
    table = ClipTable.from_records(corpus)
    asked = []

    def transcribe(clips, model):
        assert model == "the model"
        asked.extend(u.id for u in clips)
        return [base[u.id] for u in clips]

    styler = DrawStyler(table, TranscriptCache("model-s@/x", tmp_path), transcribe, _labels)
    assert styler.pending_rows == 6 and len(styler.key_names) == 5

    def draw(idx):
        worker_labels = [_labels(table.targets[i] or table.texts[i]) for i in idx]  # what the workers tokenised
        batch = LoadedBatch({"labels": pad_labels(worker_labels)}, tuple(idx), 1.0, 0, [])
        return styler(batch, "the model")

    first = draw([0, 5, 6])  # a LibriSpeech row, LJSpeech (its own style) and the repeat of row 0
    assert asked == [rows[0].id]  # one clip, transcribed once for both of its rows
    want = [base[rows[0].id], rows[-1].extra["original_text"], base[rows[0].id]]
    assert first.tensors["labels"].tolist() == pad_labels([_labels(t) for t in want]).tolist()
    assert first.tokens == sum(len(t) for t in want)
    draw([0, 1])
    assert asked == [rows[0].id, rows[1].id]  # row 0's clip is known now
    summary = styler.summary(style)
    assert summary.transcribed_on_draw == 2 and summary.pending_rows == 6
    assert summary.reference_words == sum(len(u.text.split()) for u in (rows[0], rows[1], repeat))

    styler.save()  # (the trainer saves with each checkpoint): the next run finds these two clips
    again = DrawStyler(table, TranscriptCache("model-s@/x", tmp_path), transcribe, _labels)
    assert again.pending_rows == 3 and again.resolved_rows == 3  # rows 0, 1 and the repeat styled in the table
    assert table.targets[0] == table.targets[6] == base[rows[0].id] and table.targets[1] == base[rows[1].id]
    assert table.targets[2] == ""  # still pending: the workers will tokenise the reference, the styler relabels it
    untouched = LoadedBatch({"labels": pad_labels([_labels("x")])}, (5,), 1.0, 1, [])
    assert again(untouched, "the model") is untouched  # nothing pending in this batch: handed on as it came


def test_style_on_draw_values_are_checked():
    assert validate(TrainConfig(style_on_draw="yes")).style_on_draw == "yes"
    with pytest.raises(UserError, match="--style-on-draw must be auto, yes or no"):
        validate(TrainConfig(style_on_draw="maybe"))
    with pytest.raises(UserError, match="cannot go with --style-consensus or --join-clips"):
        validate(TrainConfig(style_on_draw="yes", join_clips=3))
    validate(TrainConfig(style_on_draw="auto", style_consensus=True))  # auto styles such corpora up front instead


def test_file_identities_resolve_links_as_file_identity_does(tmp_path, monkeypatch):
    """Folders resolved once per folder: the same keys as resolving each path whole (links in the folder or
    the file itself, relative paths, `..`), and None for a file that is gone."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.flac").write_bytes(b"x" * 10)
    (real / "b.flac").write_bytes(b"y" * 20)
    (tmp_path / "linked").symlink_to(real)
    (tmp_path / "c.flac").symlink_to(real / "b.flac")
    monkeypatch.chdir(tmp_path)
    paths = [str(real / "a.flac"), str(tmp_path / "linked" / "a.flac"), "linked/b.flac", "c.flac", "real/../linked/b.flac"]
    def whole(path):  # every path resolved whole
        resolved = Path(path).resolve()
        return f"file:{resolved}|{resolved.stat().st_size}|{resolved.stat().st_mtime_ns}"

    assert file_identities(paths) == [whole(p) for p in paths] == [file_identity(p) for p in paths]
    assert file_identities(paths)[1] == file_identities(paths)[0] == whole(real / "a.flac")
    assert file_identities([str(real / "gone.flac"), "c.flac"]) == [None, whole("c.flac")]
    with pytest.raises(FileNotFoundError):
        file_identity(real / "gone.flac")


def test_segments_of_one_file_are_styled_as_clips_of_their_own(tmp_path, speech_dir):
    """A base transcript is cached per clip: two segments of one recording are two clips (one key each), in the
    up-front pass and in the table the styling on draw keys."""
    u = read_librispeech_dir(speech_dir, ["test-clean"])[0]
    segments = [replace(u, id=f"{u.id}@{a:g}-{b:g}", text=f"PART {a:g}", span=Span(a, b), extra={}) for a, b in ((0.0, 1.0), (1.0, 2.0))]
    assert len({audio_identity(s) for s in segments}) == 2 and audio_identity(u) not in {audio_identity(s) for s in segments}
    asked = Transcriber({s.id: f"Part {k}." for k, s in enumerate(segments)})
    style_rows(segments, asked, TranscriptCache("model-s@/x", tmp_path))
    assert sorted(asked.asked) == sorted(s.id for s in segments)  # each segment transcribed, not the file once
    table = ClipTable.from_records(segments)
    assert table.record(1).span == Span(1.0, 2.0) and audio_identity(table.record(1)) == audio_identity(segments[1])
    unstyled = ClipTable.from_records([replace(s, extra={}) for s in segments])  # a large corpus: styled as drawn
    styler = DrawStyler(unstyled, TranscriptCache("model-d@/x", tmp_path / "draw"), lambda clips, model: [], lambda text: [1])
    assert styler.pending_rows == 2 and styler.key_names == [audio_identity(s) for s in segments]
