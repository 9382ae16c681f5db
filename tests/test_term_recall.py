"""Your vocabulary's recall (lora.term_recall): terms read from a file, counted as scored in references and
hypotheses (whole words, the Whisper normaliser's spelling), recall / insertions / term error rate, the
paired bootstrap of its change, the typed result and its report section."""

from __future__ import annotations

import pytest

from lora.core.errors import UserError
from lora.evaluation import paired_bootstrap
from lora.report.content import vocabulary
from lora.results import EvalResult, TermResult, read_result, to_dict, write_result
from lora.term_recall import (
    count_term,
    describe_terms,
    missed_terms,
    missed_words,
    read_terms,
    suggested_terms_file,
    term_result,
    term_rows,
    utterance_terms,
)


def test_terms_are_read_one_per_line_with_comments_and_repeats_once(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("# product names\nKubernetes\n\n  Dr.  Okonkwo   # the lead\nkubectl\nkubernetes\nF# compiler\n",
                    encoding="utf-8")
    assert read_terms(path) == ("Kubernetes", "Dr. Okonkwo", "kubectl", "F# compiler")
    path.write_text("zero\none\nX\n", encoding="utf-8")  # a digit word is scored as its digit: a term all the same
    assert read_terms(path) == ("zero", "one", "X")


@pytest.mark.parametrize("content, message", [
    (b"", "no terms in it; write one term or phrase per line"),
    (b"# only a comment\n\n", "no terms in it"),
    (b"fine\n???\n", r"terms.txt:2: '\?\?\?' has no words once normalised as scored"),
    (b"caf\xe9\n", r"terms.txt:1: not UTF-8 \(byte 0xe9\); re-save the terms file as UTF-8"),
    (b"C++\n", r"terms.txt:1: 'C\+\+' is scored as 'c' \(symbols dropped\), which every 'c' would match"),
    (b"C#  # the language\n", r"terms.txt:1: 'C#' is scored as 'c'"),
])
def test_a_bad_terms_file_is_one_line(tmp_path, content, message):
    (tmp_path / "terms.txt").write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_terms(tmp_path / "terms.txt")
    with pytest.raises(UserError, match="gone.txt: cannot read the terms file"):
        read_terms(tmp_path / "gone.txt")


def test_terms_are_counted_as_scored_and_as_whole_words():
    assert count_term("a b a b a".split(), ["a", "b"]) == 2 and count_term("a a a".split(), ["a", "a"]) == 1
    found = utterance_terms(["Dr. Okonkwo", "twenty one", "cat", "Kubernetes"],
                            "DOCTOR OKONKWO SAW TWENTY ONE CATALOGS AND A CAT",
                            "Dr. Okonkwo saw 21 catalogs and a cat, a cat! Kubernetes.")
    assert found == {"Dr. Okonkwo": (1, 1), "twenty one": (1, 1), "cat": (1, 2), "Kubernetes": (0, 1)}


def _samples(pairs):
    return [{"id": f"u{i}", "reference": ref, "hypothesis": hyp} for i, (ref, hyp) in enumerate(pairs)]


def test_recall_insertions_and_the_error_rates_change():
    terms = ("kubectl", "Okonkwo")
    refs = ["RUN KUBECTL APPLY", "ASK OKONKWO", "ASK OKONKWO AGAIN", "NOTHING HERE", "KUBECTL KUBECTL"]
    before = _samples(zip(refs, ["run cube cuttle apply", "ask okonkwo", "ask oh conquer again", "nothing here",
                                 "cube control kubectl"]))
    after = _samples(zip(refs, ["run kubectl apply", "ask okonkwo", "ask okonkwo again", "nothing here kubectl",
                                "kubectl kubectl"]))
    t = term_result("terms.txt", terms, after, before, seed=3)
    assert (t.terms, t.utterances, t.utterances_with_terms, t.said) == (2, 5, 4, 5)
    assert (t.recalled_before, t.recalled_after, t.inserted_before, t.inserted_after) == (2, 5, 0, 1)
    assert (t.recall_before, t.recall_after) == (2 / 5, 1.0)
    assert (t.term_error_rate_before, t.term_error_rate_after) == (3 / 5, 1 / 5)
    expected = paired_bootstrap(term_rows(terms, before), term_rows(terms, after), seed=3)
    assert t.term_error_rate_change_ci95.delta == pytest.approx(-2 / 5) and t.term_error_rate_change_ci95.ci95 == expected["ci95"]
    assert t.per_term == [
        {"term": "kubectl", "said": 3, "recalled_before": 1, "recalled_after": 3, "inserted_before": 0, "inserted_after": 1},
        {"term": "Okonkwo", "said": 2, "recalled_before": 1, "recalled_after": 2, "inserted_before": 0, "inserted_after": 0}]
    assert describe_terms(t).startswith("recall 40.0% -> 100.0% of 5 occurrence(s) of 2 term(s) in 4 of 5 utterances; "
                                        "written where not said 0 -> 1; term error rate 60.0% -> 20.0%, change 95% CI [")
    one = term_result("terms.txt", terms, after)  # one model: no before, no change
    assert one.recalled_before is None and one.term_error_rate_change_ci95 is None and one.recall_after == 1.0
    assert describe_terms(one) == "recall 100.0% of 5 occurrence(s) of 2 term(s) in 4 of 5 utterances; 1 written where not said"
    nothing = term_result("terms.txt", ("absent",), after, before)
    assert nothing.said == 0 and nothing.recall_after is None and nothing.term_error_rate_change_ci95 is None


def test_the_term_result_survives_its_file_and_has_a_report_section(tmp_path):
    terms = ("kubectl",)
    samples = _samples([("RUN KUBECTL", "run cube cuddle"), ("KUBECTL", "kubectl")])
    t = term_result("terms.txt", terms, samples, samples[:1] + samples[1:], seed=0)
    fields = {f: None for f in EvalResult.__dataclass_fields__ if f not in ("terms", "schema_version")}
    result = EvalResult(**(fields | {"samples": [], "long_form": [], "trained_speakers": [], "versions": {}}), terms=t)
    path = write_result(tmp_path / "eval.json", result)
    again = read_result(path, EvalResult)
    assert isinstance(again.terms, TermResult) and again.terms == t
    blocks = vocabulary(to_dict(again))
    assert blocks[0] == ("h", 2, "Your terms") and "2 occurrence(s) of 1 term(s) from terms.txt" in blocks[1][1]
    assert blocks[-1][0] == "table" and blocks[-1][2] == [["kubectl", "2", "1 \u2192 1", "0 \u2192 0"]]
    assert vocabulary({}) == []


def test_train_and_eval_stop_on_a_bad_terms_file_before_any_work(tmp_path, capsys):
    from lora.runners import real_small
    from lora.scripts import evaluate

    (tmp_path / "terms.txt").write_text("fine\n!!!\n", encoding="utf-8")
    assert real_small.main(["--terms", str(tmp_path / "terms.txt"), "--output-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "terms.txt:2: '!!!' has no words once normalised as scored" in err[0]
    assert not (tmp_path / "run" / "real_metrics.json").exists()
    assert evaluate.main(["--manifest", str(tmp_path / "m.jsonl"), "--terms", str(tmp_path / "gone.txt"),
                          "--output", str(tmp_path / "eval.json")]) == 2
    assert "gone.txt: cannot read the terms file" in capsys.readouterr().err


def test_the_words_a_model_misses_are_listed_most_missed_first(tmp_path):
    refs = ["RUN KUBECTL APPLY", "KUBECTL GET PODS", "ASK OKONKWO", "ASK OKONKWO AGAIN", "KUBECTL LOGS", "RUN IT"]
    hyps = ["run cube cuttle apply", "cube control get pods", "ask okonkwo", "ask oh conquer again", "kubectl logs",
            "ran it"]
    words = missed_words(refs, hyps)
    assert words == [("kubectl", 2, 3), ("okonkwo", 1, 2), ("run", 1, 2)]  # "apply", "ask": said, never missed
    assert missed_words(refs, hyps, min_said=3) == [("kubectl", 2, 3)]
    path = tmp_path / "suggested.txt"
    path.write_text(suggested_terms_file(words, "moonshine-base-en", "train.jsonl"), encoding="utf-8")
    assert read_terms(path) == ("kubectl", "okonkwo", "run")  # the file is a --terms file as written
    assert "kubectl  # missed 2 of 3" in path.read_text()


def test_a_name_missed_as_a_whole_is_suggested_as_one_phrase():
    refs = ["CALL OKONKWO ADEYEMI NOW", "OKONKWO ADEYEMI SAID NO", "ASK OKONKWO ADEYEMI", "DR OKONKWO", "RED BLUE CAR",
            "RED BLUE", "RED CAR", "RED HAT", "BLUE HAT", "BLUE SKY"]
    hyps = ["call oh conquer adding me now", "okonkwo a demi said no", "ask oh conquer a day me", "doctor oh conquer",
            "bread glue car", "bread glue", "bread car", "bread hat", "glue hat", "glue sky"]
    terms = missed_terms(refs, hyps)
    # "okonkwo adeyemi": 3 said, 3 missed as a whole (the second has "okonkwo" but not "adeyemi"); "adeyemi" lies
    # only inside it, so not listed alone; "okonkwo" is said once more apart, so listed too (missed 3 of 4);
    # "red blue" is said twice, "red" and "blue" four times each: half inside, not more, so not a phrase
    assert terms == [("blue", 4, 4), ("red", 4, 4), ("okonkwo adeyemi", 3, 3), ("okonkwo", 3, 4)]
    assert [t for t, _, _ in missed_words(refs, hyps)] == ["blue", "red", "adeyemi", "okonkwo"]
    assert missed_terms(["A B", "A B"], ["a b", "x y"]) == [("a b", 1, 2)]  # said only together: the phrase alone
    assert missed_terms(["A B", "A B"], ["a b", "a b"]) == []


@pytest.mark.slow
def test_check_suggests_the_terms_the_base_model_misses_in_real_speech(speech_dir, tmp_path, capsys):
    import json

    from lora.data.records import read_librispeech_dir
    from lora.scripts import check

    digits = [u for u in read_librispeech_dir(speech_dir, ["fsdd"]) if u.speaker == "9201"]
    manifest = tmp_path / "digits.jsonl"
    manifest.write_text("".join(json.dumps({"id": u.id, "audio": str(u.audio), "text": u.text, "speaker": u.speaker}) + "\n"
                                for u in digits), encoding="utf-8")
    out = tmp_path / "suggested.txt"
    assert check.main([str(manifest), "--model-id", "moonshine-base-en", "--suggest-terms", str(out), "--quiet"]) == 0
    terms = read_terms(out)
    counts = [line.split("# missed ")[1].split(" of ") for line in out.read_text().splitlines() if "# missed" in line]
    assert terms and len(counts) == len(terms)
    assert all(int(n) >= 2 and 2 * int(m) >= int(n) for m, n in counts)  # each missed at least half of 2+ times
    assert f"{len(terms)} word(s) or phrase(s) moonshine-base-en missed" in capsys.readouterr().out
    assert check.main([str(manifest), "--suggest-terms", str(out)]) == 2  # which model's misses? one line
    assert "--suggest-terms needs --model-id M" in capsys.readouterr().err
    # a second check does not replace the file as edited ("keep the ones that matter"): it was overwritten, unsaid
    out.write_text("# kept\nkubernetes\n")
    assert check.main([str(manifest), "--model-id", "moonshine-base-en", "--suggest-terms", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --suggest-terms {out}: exists (a terms file, perhaps edited since); pass a new file name, or delete it "
        "to write it again"]
    assert out.read_text() == "# kept\nkubernetes\n"
