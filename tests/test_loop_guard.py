"""The decode loop guard: catches loops longer than the audio allows, never fires on the real references."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from lora.loop_guard import (
    TOKEN_GUARD,
    WORD_GUARD,
    LoopGuardLogitsProcessor,
    LoopGuardOptions,
    ends_in_loop,
    loop_cut,
    trim_loops,
    trim_token_loops,
)

LOOP = "zero zero zero zero zero zero zero zero"
PHRASE_LOOP = ("The earliest book, printed with movable types, the Gutenberg, or 42, line Bible, of about 1455, "
               "was a book of 1980s" + ", and the book of 1980s" * 6 + ".")  # 104 Moonshine tokens: its cap for 8.4 s is 110
PHRASE_LOOP_2 = PHRASE_LOOP.split(", and the book")[0] + ", and the book of 1980s."


def real_rows(speech_dir) -> list[dict]:
    return [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines() if line]


def test_the_digit_loop_is_cut_to_one_copy():
    assert loop_cut(LOOP.split(), 0.5) == 1
    assert trim_loops(LOOP, 0.5) == "zero"


@pytest.mark.parametrize("text, seconds, expected", [
    ("zero zero zero", 0.5, "zero zero zero"),  # the floor: people say "no no no"
    ("zero zero zero", 0.375, "zero zero zero"),  # ... as fast as 8 words/s
    ("Four. Four. Four.", 0.204, "Four."),  # but not at 15 words/s (the digits recipe's 0.2 s clip)
    ("Four. Four.", 0.298, "Four. Four."),  # 2 copies: floor(8 x 0.298) = 2
    ("zero zero zero zero", 0.5, "zero"),  # 4 > max(1, ceil(2), min(3, floor(4)))
    (LOOP, 2.0, LOOP),  # 2 s can hold 8 words
    (LOOP, 1.5, "zero"),  # 8 > ceil(4 x 1.5) = 6
    ("i know i know i know i know i know", 1.0, "i know"),  # a bigram loop: 5 copies > 3
    ("and so my fellow americans ask not ask not ask not ask not ask not", 2.0, "and so my fellow americans ask not"),  # 5 > max(1, ceil(4 x 2 / 2), min(3, floor(8 x 2 / 2)))
    ("Zero, zero. ZERO zero zero zero zero zero", 0.5, "Zero,"),  # compared by letters only, text kept
    ("the cat sat on the mat", 0.5, "the cat sat on the mat"),  # too many words, but no repetition
    # a phrase loop run to Moonshine's length cap after the 8.4 s LJSpeech clip's own words (5 words a copy: n <= 4
    # never saw it; counting the 20 words before the run is what finds it: 6 copies > ceil((33.6 - 20) / 5))
    (PHRASE_LOOP, 8.389, "The earliest book, printed with movable types, the Gutenberg, or 42, line Bible, of about 1455, "
                         "was a book of 1980s, and the"),
    (PHRASE_LOOP_2, 8.389, PHRASE_LOOP_2),  # two copies: as said, as far as the audio's length can tell
    ("", 0.5, ""),
])
def test_trim_loops(text, seconds, expected):
    assert trim_loops(text, seconds) == expected


def test_allowed_copies_grow_with_audio_and_shrink_with_ngram_length():
    assert [WORD_GUARD.allowed(1, s) for s in (0.2, 0.3, 0.375, 1.0, 2.5, 10.0)] == [1, 2, 3, 4, 10, 40]
    assert [WORD_GUARD.allowed(n, 10.0) for n in (1, 2, 3, 4, 5, 10)] == [40, 20, 14, 10, 8, 4]
    assert LoopGuardOptions(min_repeats=1).allowed(1, 0.1) == 1


def test_earliest_cut_wins():
    units = ["a", "b"] + ["c"] * 6 + ["d", "e"] * 6
    assert loop_cut(units, 0.5) == 3


def test_ends_in_loop_is_the_streaming_check():
    assert ends_in_loop([5] * 5, 0.5, TOKEN_GUARD)  # 5 > max(1, ceil(8 x 0.5), min(3, floor(16 x 0.5))) = 4
    assert not ends_in_loop([5] * 4, 0.5, TOKEN_GUARD)
    assert not ends_in_loop([5] * 5 + [6], 0.5, TOKEN_GUARD)  # the loop has to be at the end
    assert ends_in_loop([7, 8] * 4, 0.5, TOKEN_GUARD)  # bigram: 4 > max(1, 2, min(3, 4))


def test_trim_token_loops_ignores_special_ids():
    assert trim_token_loops([50257, 11, 11, 11, 11, 11, 50256], 0.3, special_ids=frozenset({50256, 50257})) == [11]
    assert trim_token_loops([11, 12, 13], 0.3) == [11, 12, 13]


def test_no_real_reference_fires_at_word_level(speech_dir):
    rows = real_rows(speech_dir)
    assert len(rows) == 326
    fired = [(r["id"], r["text"]) for r in rows if loop_cut([w.lower() for w in r["text"].split()], r["seconds"]) is not None]
    assert fired == []
    # and the fastest real clips do exceed the word rate, so it is the floor and the n-gram rule that protect them
    assert max(len(r["text"].split()) / r["seconds"] for r in rows) > WORD_GUARD.units_per_second


@pytest.mark.parametrize("model", ["moonshine-base-en", "whisper-tiny.en"])
def test_no_real_reference_fires_at_token_level(speech_dir, model):
    from transformers import AutoTokenizer

    from lora.importing import cached_import

    tokenizer = AutoTokenizer.from_pretrained(cached_import(model, progress=lambda m: None))
    rows = real_rows(speech_dir)
    fired = []
    for row in rows:
        for text in (row["text"], row["text"].lower(), " " + row["text"].lower()):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if loop_cut(ids, row["seconds"], TOKEN_GUARD) is not None:
                fired.append((row["id"], text))
    assert fired == []
    loop_ids = tokenizer.encode(" " + LOOP, add_special_tokens=False)
    assert loop_cut(loop_ids, 0.5, TOKEN_GUARD) is not None
    if model == "moonshine-base-en":  # (Whisper's own length cap, 6 tokens/s, stops such a loop at 3 copies)
        phrase_ids = tokenizer.encode(" " + PHRASE_LOOP, add_special_tokens=False)  # 11 tokens a copy
        assert len(phrase_ids) <= 110 and loop_cut(phrase_ids, 8.389, TOKEN_GUARD) is not None


def test_processor_forces_eos_only_on_the_looping_row():
    import torch

    eos, vocab = 2, 10
    # A tiny fake decoder: row 0 loops on token 7, row 1 counts 3, 4, 5, 6, 3, 4, ... (no loop at 10 s).
    guard = LoopGuardLogitsProcessor([0.5, 10.0], eos_token_id=eos)
    ids = torch.tensor([[1], [1]])
    for step in range(12):
        scores = torch.zeros(2, vocab)
        scores[0, 7] = 5.0
        scores[1, 3 + step % 4] = 5.0
        scores = guard(ids, scores)
        nxt = scores.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    row0, row1 = ids[0, 1:].tolist(), ids[1, 1:].tolist()
    assert row0[:6] == [7, 7, 7, 7, 7, eos]  # allowed(1, 0.5 s) = 4 copies, the 5th triggers EOS
    assert eos not in row1
    assert guard.stopped == {0}


def test_processor_maps_beams_to_their_row():
    import torch

    guard = LoopGuardLogitsProcessor([0.5, 10.0], eos_token_id=2)
    guard.prompt_length = 1
    ids = torch.tensor([[1, 7, 7, 7, 7, 7]] * 4)  # 2 rows x 2 beams, all looping
    scores = guard(ids, torch.zeros(4, 10))
    assert scores[:2].argmax(dim=-1).tolist() == [2, 2]  # row 0 (0.5 s): stopped
    assert torch.isfinite(scores[2:]).all()  # row 1 (10 s): 5 copies are allowed
    with pytest.raises(ValueError, match="3 decoder rows for 2 audio lengths"):
        guard(ids[:3], torch.zeros(3, 10))


def test_real_generate_of_a_tiny_moonshine(tiny_moonshine, speech_dir):
    """A random-initialised Moonshine loops (it repeats one token): the guard stops the 0.3 s row early."""
    import torch
    from transformers import (
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        LogitsProcessorList,
    )

    from lora.families import family_for

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_moonshine).eval()
    processor = AutoProcessor.from_pretrained(tiny_moonshine)
    family = family_for(model.config.model_type)
    paths = ["fsdd/9201/1/9201-1-0000.flac", "test-clean/1089/134686/1089-134686-0000.flac"]
    clips = [sf.read(speech_dir / p, dtype="float32")[0] for p in paths]
    seconds = [len(c) / 16000 for c in clips]
    inputs = family.pad_inputs([family.featurize(processor, c) for c in clips])
    eos = model.generation_config.eos_token_id
    with torch.inference_mode():
        plain = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        guard = LoopGuardLogitsProcessor(seconds, eos_token_id=eos)
        guarded = model.generate(**inputs, max_new_tokens=40, do_sample=False, logits_processor=LogitsProcessorList([guard]))
    prompt = guard.prompt_length
    assert plain.shape[1] == prompt + 40 and eos not in plain[:, prompt:].tolist()[0]  # it loops to the cap
    row0 = guarded[0, prompt:].tolist()
    assert TOKEN_GUARD.allowed(1, seconds[0]) == 3  # 0.30 s: max(1, ceil(8 x 0.3), min(3, floor(16 x 0.3)))
    assert row0.index(eos) == 4  # the 4th copy triggered EOS
    assert guard.stopped == {0}  # 10.4 s allows 84 copies: the long row runs to the cap
    assert eos not in guarded[1, prompt:].tolist()
    assert trim_token_loops(row0, seconds[0], special_ids=frozenset({eos})) == row0[:1]


def test_real_generate_of_a_tiny_whisper(tiny_whisper, speech_dir):
    """Whisper's own generate (forced prompt tokens) takes the guard too: only the 0.3 s row is stopped."""
    import torch
    from transformers import (
        AutoModelForSpeechSeq2Seq,
        AutoProcessor,
        LogitsProcessorList,
    )

    from lora.families import family_for

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_whisper).eval()
    processor = AutoProcessor.from_pretrained(tiny_whisper)
    family = family_for(model.config.model_type)
    paths = ["fsdd/9201/1/9201-1-0000.flac", "test-clean/1089/134686/1089-134686-0000.flac"]
    clips = [sf.read(speech_dir / p, dtype="float32")[0] for p in paths]
    inputs = family.pad_inputs([family.featurize(processor, c) for c in clips])
    eos = model.generation_config.eos_token_id
    with torch.inference_mode():
        plain = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        guard = LoopGuardLogitsProcessor([len(c) / 16000 for c in clips], eos_token_id=eos)
        guarded = model.generate(**inputs, max_new_tokens=40, do_sample=False, logits_processor=LogitsProcessorList([guard]))
    assert eos not in plain[0].tolist()  # the random model loops to the cap
    assert guard.stopped == {0}
    row0 = guarded[0].tolist()
    assert eos in row0 and row0.index(eos) < 10
    assert eos not in guarded[1].tolist()


def test_transcribe_examples_stops_the_loop(tiny_moonshine, speech_dir):
    """The PyTorch decode path: a looping random model's 0.3 s clip is stopped after min_repeats + 1 tokens."""
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    from lora.data.records import read_librispeech_dir
    from lora.data_loader import prepare_dataset
    from lora.decoding import transcribe_examples
    from lora.families import family_for

    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_moonshine).eval()
    processor = AutoProcessor.from_pretrained(tiny_moonshine)
    family = family_for(model.config.model_type)
    rows = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.id == "9201-1-0000"]
    examples = prepare_dataset(rows, processor, family)
    eos = processor.tokenizer.eos_token_id
    with torch.inference_mode():
        plain = model.generate(**family.pad_inputs([examples[0].inputs]), **family.generate_kwargs(examples[0].seconds))
    cap = family.max_new_tokens(examples[0].seconds)
    assert eos not in plain[0, 1:].tolist() and plain.shape[1] == 1 + cap  # unguarded, it loops to the cap

    outputs = []
    generate = model.generate

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        outputs.append(out)
        return out

    model.generate = recording_generate
    transcribe_examples(model, processor, family, examples)
    row = outputs[0][0, 1:].tolist()
    allowed = TOKEN_GUARD.allowed(1, examples[0].seconds)
    assert row.index(eos) == allowed + 1 < cap  # the copy past the allowed ones forced EOS
    assert row[:allowed + 1] == plain[0, 1:allowed + 2].tolist()  # the same tokens up to there


def test_the_onnx_greedy_loop_stops_and_cuts():
    """The exported-model decode loop (ONNX Runtime, both Moonshine runners share it): one copy kept."""
    import numpy as np

    from lora.families.moonshine.reference import greedy_tokens

    calls = []

    def step(token, first):  # a decoder that always answers token 7, then 9, 9, 9, ...
        calls.append(token)
        logits = np.zeros((1, 1, 16), dtype=np.float32)
        logits[0, -1, 7 if len(calls) == 1 else 9] = 1.0
        return logits

    assert greedy_tokens(step, 1, 2, 40) == [7] + [9] * 39  # unguarded: to the cap
    calls.clear()
    assert greedy_tokens(step, 1, 2, 40, seconds=0.3) == [7, 9]  # guarded: stopped at the 4th 9, cut to one
    assert len(calls) == 5


def test_the_ctranslate2_outputs_are_trimmed(tiny_whisper):
    """The CTranslate2 path: ids cut after the first copy, the text trimmed, for a clip's length."""
    from tokenizers import Tokenizer

    from lora.families.whisper.reference import Ct2Whisper

    runner = object.__new__(Ct2Whisper)  # no ctranslate2 model needed to check the guard on its outputs
    runner.tokenizer = Tokenizer.from_file(str(tiny_whisper / "tokenizer.json"))
    zero = runner.tokenizer.encode(" zero", add_special_tokens=False).ids
    loop = zero * 8
    out = runner._guarded(loop, 0.5)
    assert list(out.ids) == zero and out.text == "zero"
    long = runner._guarded(zero * 3, 0.5)  # three copies are always allowed
    assert list(long.ids) == zero * 3 and long.text == "zero zero zero"


def _ends_in_loop_whole_run(units, seconds, options) -> bool:
    """The definition, walking every copy of the run back (what `ends_in_loop` did before its early stop)."""
    for n in range(1, options.max_ngram + 1):
        if len(units) < 2 * n:
            break
        copies, start = 1, len(units) - n
        while start - n >= 0 and units[start - n:start] == units[-n:]:
            copies += 1
            start -= n
            if copies > options.allowed(n, seconds, before=start):
                return True
    return False


@settings(max_examples=400, deadline=None)
@given(units=st.lists(st.integers(0, 2), max_size=120), period=st.integers(1, 4), copies=st.integers(0, 60),
       seconds=st.floats(0.0, 12.0), token_level=st.booleans())
def test_the_early_stop_of_the_streaming_check_changes_no_answer(units, period, copies, seconds, token_level):
    options = TOKEN_GUARD if token_level else WORD_GUARD
    units = units + units[-period:] * copies  # long runs at the end, where the early stop matters
    assert ends_in_loop(units, seconds, options) == _ends_in_loop_whole_run(units, seconds, options)


def test_a_long_run_is_checked_in_a_bounded_walk():
    """Decoding an hour: a 30 s chunk's run of one token is checked in a few comparisons, not one per copy."""

    class Counting(int):
        compared = 0

        def __eq__(self, other):
            Counting.compared += 1
            return int(self) == int(other)

        __hash__ = int.__hash__

    run = [Counting(7) for _ in range(200)]  # distinct objects, so that list comparison calls __eq__; under the 240 tokens 30 s allows at 8 tokens/s: no loop yet
    assert not ends_in_loop(run, 30.0, TOKEN_GUARD)
    # at most min_repeats + 1 copies of each n-gram compared, n units each (the whole run: 3,723 comparisons)
    assert Counting.compared <= sum(n * (TOKEN_GUARD.min_repeats + 1) for n in range(1, TOKEN_GUARD.max_ngram + 1))
