"""Per-run report from a metrics dict: `report.md`, `report.html` and two PNG plots.

Input is what a run wrote (`real_metrics.json`: baseline vs tuned) or what `lora-eval` wrote
(`eval.json`: one model); this module knows no models and imports no torch. Any key may be
missing or null (older runs, runs without a canary): the report then says "n/a" rather than fail.

The HTML embeds its plots as base64 data URIs so it is one portable file: it can be mailed,
attached to a CI job or copied out of the run folder without its PNGs and still show them.
The Markdown references the PNGs next to it (embedding base64 there bloats diffs and most
Markdown viewers refuse data URIs). Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from lora.core.outputs import write_bytes_atomic, write_text_atomic
from lora.report.plots import loss_curve_png, wer_pairs_png, wer_single_png
from lora.report.render import render_html, render_markdown

LOSS_PNG = "loss_curve.png"
WER_PNG = "wer_per_utterance.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
MAX_REGRESSIONS = 10
MAX_UTTERANCE_ROWS = 300  # beyond this the page gets unwieldy; the JSON has them all
NA = "n/a"
MINUS = "\u2212"  # typographic minus: "−4.2" lines up with "+4.2"
PAIR_HEADERS = ["id", "WER before", "WER after", "change", "reference", "hypothesis before", "hypothesis after"]
SINGLE_HEADERS = ["id", "WER", "errors / words", "reference", "hypothesis"]


# ---- formatting (pure) ------------------------------------------------------------------------

def _num(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def pct(value) -> str:
    """A WER/CER fraction as a percentage with one decimal."""
    return NA if _num(value) is None else f"{100 * value:.1f}%"


def pts(value) -> str:
    """A WER difference (fraction) as signed percentage points, with a real minus sign."""
    return NA if _num(value) is None else f"{100 * value:+.1f}".replace("-", MINUS)


def fixed(value, digits: int = 3) -> str:
    return NA if _num(value) is None else f"{value:.{digits}f}"


def seconds(value) -> str:
    return NA if _num(value) is None else f"{value:.1f} s"


def plain(value) -> str:
    """Config/version values as one readable string (lists joined, None as n/a)."""
    if value is None:
        return NA
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "[]"
    return json.dumps(value) if isinstance(value, dict) else str(value)


def interval(ci) -> str:
    """`[−6.0, −2.1]` in points (signed, as it is a difference)."""
    return f"[{pts(ci[0])}, {pts(ci[1])}]" if ci and len(ci) == 2 else NA


def change_sentence(label: str, before, after, test: dict | None) -> tuple[str, str]:
    """`WER 12.3% → 8.1% (−4.2 pts, 95% CI [−6.0, −2.1]): improved` and its verdict word."""
    test = test or {}
    delta = test.get("delta")
    if delta is None and _num(before) is not None and _num(after) is not None:
        delta = after - before
    verdict = test.get("verdict") or "no significance test"
    ci = f", 95% CI {interval(test['ci95'])}" if test.get("ci95") else ""
    return f"{label} {pct(before)} \u2192 {pct(after)} ({pts(delta)} pts{ci}): {verdict}", verdict


def is_comparison(metrics: dict) -> bool:
    """A training run (before/after) rather than a single-model `lora-eval` result."""
    return "baseline_wer" in metrics or any("wer_before" in s for s in metrics.get("samples") or [])


def kv_table(pairs: list[tuple[str, object]]) -> tuple:
    rows = [[k, plain(v)] for k, v in pairs]
    return ("table", ["item", "value"], rows, [""] * len(rows)) if rows else ("p", "none recorded")


def _change_class(change) -> str:
    return "" if _num(change) is None else "worse" if change > 1e-12 else "better" if change < -1e-12 else ""


def pair_rows(samples: list[dict]) -> tuple:
    rows = [[str(s.get("id", "?")), pct(s.get("wer_before")), pct(s.get("wer_after")), pts(s.get("wer_change")),
             s.get("reference") or "", s.get("hypothesis_before") or "", s.get("hypothesis_after") or ""]
            for s in samples]
    return ("table", PAIR_HEADERS, rows, [_change_class(s.get("wer_change")) for s in samples])


def single_rows(samples: list[dict]) -> tuple:
    rows = [[str(s.get("id", "?")), pct(s.get("wer")), f"{s.get('errors', NA)} / {s.get('ref_words', NA)}",
             s.get("reference") or "", s.get("hypothesis") or ""] for s in samples]
    return ("table", SINGLE_HEADERS, rows, ["worse" if (_num(s.get("wer")) or 0) > 0 else "" for s in samples])


# ---- sections (pure: metrics -> blocks) -------------------------------------------------------

def model_name(m: dict) -> str:
    return str(m.get("model_id_used") or "unknown model")


def data_line(m: dict) -> str:
    source = m.get("data_source") or {}
    if source:
        return f"{source.get('kind', NA)}: {source.get('where', NA)} (train split {source.get('train_split_used', NA)})"
    return str(m.get("data") or NA)


def headline(m: dict) -> list[tuple]:
    if is_comparison(m):
        text, verdict = change_sentence("WER", m.get("baseline_wer"), m.get("tuned_wer"), m.get("wer_delta_ci95"))
    else:
        ci = m.get("wer_ci95")
        bounds = f" (95% CI [{pct(ci[0])}, {pct(ci[1])}])" if ci and len(ci) == 2 else ""
        n = m.get("utterances") or len(m.get("samples") or [])
        text, verdict = f"WER {pct(m.get('wer'))}{bounds}, CER {pct(m.get('cer'))} on {n} utterances", "single"
    return [("h", 1, f"Report: {model_name(m)}"), ("p", f"Data: {data_line(m)}"), ("verdict", text, verdict)]


def _diff(before, after, fmt) -> str:
    return NA if _num(before) is None or _num(after) is None else fmt(after - before)


def _signed_loss(value: float) -> str:
    return f"{value:+.3f}".replace("-", MINUS)


def results(m: dict) -> list[tuple]:
    canary = m.get("canary") or {}
    pairs = [("Eval loss", m.get("baseline_eval_loss"), m.get("tuned_eval_loss"), fixed, _signed_loss),
             ("WER", m.get("baseline_wer"), m.get("tuned_wer"), pct, pts),
             ("CER", m.get("baseline_cer"), m.get("tuned_cer"), pct, pts)]
    cw = (canary.get("wer_before"), canary.get("wer_after"))
    if cw != (None, None):
        pairs.append(("Canary WER (forgetting)", *cw, pct, pts))
    if canary.get("cer_before") is not None:
        pairs.append(("Canary CER", canary["cer_before"], canary.get("cer_after"), pct, pts))
    if canary.get("orthographic_wer_before") is not None:
        pairs.append(("Canary orthographic WER", canary["orthographic_wer_before"], canary.get("orthographic_wer_after"), pct, pts))
    table = [[name, show(b), show(a), _diff(b, a, sign)] for name, b, a, show, sign in pairs]
    table.append(["Train loss (mean of logged)", "", fixed(m.get("train_loss")), ""])
    headers = ["metric", "baseline", "tuned", "change (loss / WER pts)"]
    return [("h", 2, "Results"), ("table", headers, table, [""] * len(table))]


def significance(m: dict) -> list[tuple]:
    test = m.get("wer_delta_ci95") or {}
    n = m.get("wer_utterances") or len(m.get("samples") or [])
    if not test.get("ci95"):
        text = f"No interval could be computed ({test.get('verdict', 'no test recorded')}) over {n} utterance(s)."
    else:
        text = (f"Paired bootstrap over {n} eval utterances ({test.get('resamples', NA)} resamples, seed "
                f"{test.get('seed', NA)}): WER change {pts(test.get('delta'))} pts, 95% CI {interval(test['ci95'])}. "
                f"Verdict: {test.get('verdict', NA)}. 'improved'/'worse' only when the interval excludes 0.")
    blocks = [("h", 2, "Is the change real?"), ("p", text)]
    shared = (m.get("leakage") or {}).get("shared_speakers") or []
    if shared:
        names = ", ".join(s or "no speaker field" for s in shared[:5])
        blocks.append(("p", f"Not speaker-disjoint: {len(shared)} eval speaker(s) also trained ({names}; "
                            "--allow-shared-speakers). The change measures unseen utterances of those speakers, "
                            "not unseen speakers."))
    clustered = m.get("wer_delta_clustered_ci95") or {}
    if clustered.get("ci95"):
        blocks.append(("p", f"Speaker-clustered paired bootstrap ({len(m.get('eval_speakers') or [])} speakers, speakers then "
                            f"their utterances resampled): WER change {pts(clustered.get('delta'))} pts, 95% CI "
                            f"{interval(clustered['ci95'])}. Verdict: {clustered.get('verdict', NA)}."))
    if m.get("max_hyp_ref_word_ratio") is not None:
        blocks.append(("p", f"Output length (tuned): {m.get('outputs_over_2x_ref', NA)} output(s) longer than twice their "
                            f"reference in words, longest {fixed(m.get('max_hyp_ref_word_ratio'), 1)}x; insertions before "
                            f"normalisation {m.get('raw_insertions_before', NA)} \u2192 {m.get('raw_insertions_after', NA)}."))
    return blocks


def forgetting(m: dict) -> list[tuple]:
    """Canary = general speech the run never trained on: a rise in its WER means forgetting."""
    canary = m.get("canary") or {}
    before = canary.get("wer_before")
    after = canary.get("wer_after")
    blocks: list[tuple] = [("h", 2, "Forgetting (canary set)")]
    if before is None and after is None:
        return blocks + [("p", "No canary set was scored in this run, so forgetting was not measured.")]
    text, verdict = change_sentence("Canary WER", before, after, canary.get("wer_delta_ci95"))
    source = f"{canary.get('utterances', NA)} utterances from {canary.get('source', NA)}"
    cer = f"CER {pct(canary.get('cer_before'))} \u2192 {pct(canary.get('cer_after'))}"
    blocks += [("verdict", text, verdict), ("p", f"Canary: {source}; {cer}.")]
    if canary.get("verdict"):
        reasons = "; ".join(canary.get("verdict_reasons") or []) or "every check held"
        style = (f"Style against the base model's own output: orthographic WER {pct(canary.get('orthographic_wer_before'))} "
                 f"\u2192 {pct(canary.get('orthographic_wer_after'))} (references in the base model's casing and punctuation "
                 f"where they have none), punctuation F1 {fixed(canary.get('punctuation_f1'))}, capitalisation F1 "
                 f"{fixed(canary.get('capitalisation_f1'))}, insertions before normalisation "
                 f"{canary.get('raw_insertions_before', NA)} \u2192 {canary.get('raw_insertions_after', NA)}.")
        blocks += [("verdict", f"Forgetting verdict: {canary['verdict']} ({reasons})", canary["verdict"]), ("p", style)]
    return blocks


def _regressed(m: dict) -> list[dict]:
    """Utterances that got worse (training run) or have any error (single model), worst first."""
    key = "wer_change" if is_comparison(m) else "wer"
    return sorted((s for s in m.get("samples") or [] if (_num(s.get(key)) or 0) > 0), key=lambda s: -s[key])


def regressions(m: dict) -> list[tuple]:
    samples, worse = m.get("samples") or [], _regressed(m)
    if is_comparison(m):
        better = sum((_num(s.get("wer_change")) or 0) < 0 for s in samples)
        summary = (f"{len(worse)} of {len(samples)} utterances got worse, {better} better, "
                   f"{len(samples) - len(worse) - better} unchanged.")
        title, table = "Worst regressions", pair_rows(worse[:MAX_REGRESSIONS])
    else:
        summary = f"{len(worse)} of {len(samples)} utterances have at least one error."
        title, table = "Worst utterances", single_rows(worse[:MAX_REGRESSIONS])
    return [("h", 2, title), ("p", summary)] + ([table] if worse else [])


def plots(m: dict) -> list[tuple]:
    blocks = [("h", 2, "WER per utterance"), ("img", WER_PNG, "WER per utterance")]
    if is_comparison(m):
        blocks += [("h", 2, "Training loss"), ("img", LOSS_PNG, "training loss per step")]
        blocks += eval_curve(m)
    return blocks


def eval_curve(m: dict) -> list[tuple]:
    """The `--eval-steps` evaluations and which step's adapter was kept (nothing without them)."""
    history = m.get("eval_history") or []
    if not history:
        return []
    best = m.get("best_step")
    rows = [[str(p.get("step")), fixed(p.get("eval_loss")), pct(p.get("wer")), "kept" if p.get("step") == best else ""]
            for p in history]
    note = (f"Evaluated every {(m.get('config') or {}).get('eval_steps', NA)} steps; the adapter of step {best} "
            f"(lowest {m.get('best_metric') or NA}) was kept and is the \"after\" model above.")
    return [("h", 2, "Evaluation during training"), ("p", note), ("table", ["step", "eval loss", "WER", "kept"], rows, [""] * len(rows))]


def all_utterances(m: dict) -> list[tuple]:
    samples = list(m.get("samples") or [])
    shown = samples[:MAX_UTTERANCE_ROWS]
    cut = len(samples) > len(shown)
    note = [("p", f"First {MAX_UTTERANCE_ROWS} of {len(samples)} shown; the JSON lists all.")] if cut else []
    return [("h", 2, "All utterances"), *note, (pair_rows if is_comparison(m) else single_rows)(shown)]


def long_recordings(m: dict) -> list[tuple]:
    """`lora eval`'s clips over 30 s, transcribed by the long-form path (nothing without them)."""
    clips = m.get("long_form") or []
    if not clips:
        return []
    base = m.get("long_form_base_wer")
    text = (f"{len(clips)} clip(s) over 30 s went through the long-form path (speech detected, decoded in chunks of "
            f"at most 30 s) and are scored apart: WER {pct(m.get('long_form_wer'))}"
            + (f" (base model {pct(base)})." if base is not None else "."))
    with_base = any("base_wer" in c for c in clips)
    headers = ["id", "length", "segments", *(["WER base"] if with_base else []), "WER", "reference", "hypothesis"]
    rows = [[str(c.get("id", "?")), seconds(c.get("seconds")), str(len(c.get("segments") or [])),
             *([pct(c.get("base_wer"))] if with_base else []), pct(c.get("wer")),
             c.get("reference") or "", c.get("hypothesis") or ""] for c in clips[:MAX_UTTERANCE_ROWS]]
    return [("h", 2, "Long recordings"), ("p", text), ("table", headers, rows, [""] * len(rows))]


def data_and_timing(m: dict) -> list[tuple]:
    data = [("Train utterances / speakers", f"{len(m.get('train_ids') or [])} / {len(m.get('train_speakers') or [])}"),
            ("Eval utterances / speakers", f"{len(m.get('eval_ids') or [])} / {len(m.get('eval_speakers') or [])}"),
            ("Train / eval audio", f"{seconds(m.get('train_audio_seconds'))} / {seconds(m.get('eval_audio_seconds'))}"),
            ("Family / target policy", f"{m.get('family', NA)} / {m.get('target_policy', NA)}"),
            ("Styled targets", _target_style(m.get("target_style"))),
            ("LoRA target modules", m.get("target_modules"))]
    timing = [("Device", f"{m.get('device', NA)} x {m.get('world_size', 1)}"),
              ("Training wall time", seconds(m.get("train_wall_seconds"))),
              ("Audio seconds trained per second", fixed(m.get("train_audio_seconds_per_second"), 1)),
              ("Whole run wall time", seconds(m.get("wall_seconds"))),
              ("Peak RSS", NA if m.get("peak_rss_mb") is None else f"{m['peak_rss_mb']:.0f} MB"),
              ("Stages (seconds, peak RSS after)", _stages(m.get("scale") or {}))]
    if not is_comparison(m):
        data = [("Adapter", m.get("adapter_dir")), ("Family", m.get("family")), ("Audio", seconds(m.get("audio_seconds"))),
                ("Eval loss", fixed(m.get("eval_loss"))),
                *[(k.capitalize(), m.get(k)) for k in ("substitutions", "deletions", "insertions", "ref_words")]]
        timing = [("Wall time", seconds(m.get("wall_seconds")))]
    return [("h", 2, "Data"), kv_table(data), ("h", 2, "Config"), kv_table(list((m.get("config") or {}).items())),
            ("h", 2, "Timing and resources"), kv_table(timing),
            ("h", 2, "Versions"), kv_table(list((m.get("versions") or {}).items()))]


def _stages(scale: dict) -> str:
    secs, rss = scale.get("stage_seconds") or {}, scale.get("stage_peak_rss_mb") or {}
    return "; ".join(f"{k} {v:.1f} s, {rss.get(k, 0):.0f} MB" for k, v in secs.items()) or NA


def _target_style(t: dict | None) -> str:
    if not t or t.get("policy") != "styled":
        return NA
    return (f"{t.get('styled_rows')} of {t.get('rows')} references given the base model's style (word coverage "
            f"{pct(t.get('coverage'))}; {t.get('consensus_rows', 0)} given the most common style of their text), "
            f"{t.get('own_style_rows')} with their own; {t.get('transcribed')} transcribed, "
            f"{t.get('cache_hits')} from the cache" + _on_draw(t))


def _on_draw(t: dict) -> str:
    if not t.get("on_draw"):
        return ""
    return (f"; styled as drawn: {t.get('pending_rows', 0)} rows had no cached transcript when training began, "
            f"{t.get('transcribed_on_draw', 0)} clips transcribed in training ({t.get('seconds_on_draw', 0.0):.1f} s)")


MAX_TERM_ROWS = 30


def vocabulary(m: dict) -> list[tuple]:
    """`--terms`: the user's terms, recalled where said and written where not (nothing without them)."""
    t = m.get("terms")
    if not t:
        return []
    said = (f"{t['said']} occurrence(s) of {t['terms']} term(s) from {t['terms_file']} are said in "
            f"{t['utterances_with_terms']} of the {t['utterances']} eval utterances")
    two = t.get("recalled_before") is not None
    if two:
        text = (f"{said}. Written where said: {t['recalled_before']} \u2192 {t['recalled_after']} (recall "
                f"{pct(t.get('recall_before'))} \u2192 {pct(t.get('recall_after'))}); written where not said: "
                f"{t['inserted_before']} \u2192 {t['inserted_after']}. Term error rate (missed + written where not "
                f"said, per occurrence) {pct(t.get('term_error_rate_before'))} \u2192 {pct(t.get('term_error_rate_after'))}.")
    else:
        text = (f"{said}. Written where said: {t['recalled_after']} (recall {pct(t.get('recall_after'))}); written "
                f"where not said: {t['inserted_after']}.")
    blocks = [("h", 2, "Your terms"), ("p", text)]
    test = t.get("term_error_rate_change_ci95") or {}
    if test.get("ci95"):
        blocks.append(("p", f"Paired bootstrap of the term error rate's change ({test.get('resamples', NA)} resamples): "
                            f"{pts(test.get('delta'))} pts, 95% CI {interval(test['ci95'])}. Verdict: {test.get('verdict', NA)}."))
    rows = t.get("per_term") or []
    if rows:
        def side(r: dict, what: str) -> str:
            return f"{r[what + '_before']} \u2192 {r[what + '_after']}" if two else str(r[what + "_after"])

        table = [[r["term"], str(r["said"]), side(r, "recalled"), side(r, "inserted")] for r in rows[:MAX_TERM_ROWS]]
        blocks.append(("table", ["term", "said", "written where said", "written where not said"], table, [""] * len(table)))
    return blocks


def build_document(metrics: dict) -> list[tuple]:
    """The whole report as blocks, in reading order: verdict first, details last."""
    body = headline(metrics)
    if is_comparison(metrics):
        body += results(metrics) + significance(metrics) + forgetting(metrics)
    return (body + vocabulary(metrics) + regressions(metrics) + plots(metrics) + all_utterances(metrics)
            + long_recordings(metrics) + data_and_timing(metrics))


def build_images(metrics: dict) -> dict[str, bytes]:
    if not is_comparison(metrics):
        return {WER_PNG: wer_single_png(metrics.get("samples") or [])}
    return {LOSS_PNG: loss_curve_png(metrics.get("train_loss_history") or [], metrics.get("baseline_eval_loss"),
                                     metrics.get("tuned_eval_loss"), metrics.get("eval_history") or [],
                                     metrics.get("best_step")),
            WER_PNG: wer_pairs_png(metrics.get("samples") or [])}


# ---- writing ----------------------------------------------------------------------------------

def write_report(metrics: dict, out_dir: Path) -> dict[str, Path]:
    """Write the plots, report.md and report.html into out_dir; return {name: path} of what was written.

    A training run gets loss_curve.png (a labelled "no data" plot when nothing was logged) and
    wer_per_utterance.png; a single-model eval.json gets wer_per_utterance.png only.
    """
    out_dir = Path(out_dir)
    images = build_images(metrics)
    blocks = build_document(metrics)
    written = {name: write_bytes_atomic(out_dir / name, png) for name, png in images.items()}
    written[REPORT_MD] = write_text_atomic(out_dir / REPORT_MD, render_markdown(blocks))
    html = render_html(blocks, f"Report: {model_name(metrics)}", images)
    written[REPORT_HTML] = write_text_atomic(out_dir / REPORT_HTML, html)
    return written
