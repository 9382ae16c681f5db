"""`lora-eval --model-id M [--adapter-dir D] (--data-dir DIR | --manifest FILE | --dataset D) --output eval.json`

Scores any model (optionally with a LoRA adapter) on any manifest, dataset or LibriSpeech-layout folder:
eval loss, normalised WER/CER with substitutions/deletions/insertions, a bootstrap 95% interval of
the WER, and per-utterance results (worst first). `real_small` uses the same functions. Clips over
30 s are transcribed by the long-form path (VAD chunks of at most the family's `longform_chunk_s`: Moonshine
15 s, Whisper 30 s; lora.longform) and scored apart, with their segment times (`long_form`, `long_form_wer`:
no eval loss, the models take 30 s at most).
Beside the normalised WER: the orthographic WER (case + punctuation kept, against the references as
written; a folder's manifest.jsonl supplies LJSpeech's/JFK's own orthography), insertions before
normalisation and output lengths (decoder loops), and with `--compare-base` (an adapter given) the base
model's WER (the long clips' apart, `long_form_base_wer`) and the punctuation / capitalisation F1 of the
adapted output against the base output.
With `--terms FILE` (your vocabulary, one term per line): how often the model writes each term where it
is said, and where it is not, over every clip, long-form ones included (lora.term_recall); with
`--compare-base`, the base model's beside it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_not_an_input, check_output_file, library_versions
from lora.core.paths import default_speech_dir
from lora.core.text import TARGET_POLICIES
from lora.data.hf_sources import detect_dataset_format, read_dataset
from lora.data.manifest import read_source
from lora.data.preflight import preflight
from lora.data.records import list_subsets, read_librispeech_dir
from lora.data.selection import seen_in_training, select_balanced
from lora.data_loader import prepare_dataset
from lora.decoding import assess, transcribe_examples
from lora.evaluation import bootstrap_wer_ci, score
from lora.longform import LongformOptions, torch_transcriber, transcribe_any
from lora.model_utils import base_model_view, load_base, load_with_adapter, resolve_model_id
from lora.report.content import write_report
from lora.results import EvalResult, to_dict, write_result
from lora.scripts.dataset_args import add_dataset_args, dataset_options
from lora.scripts.run_stt import leakage_warnings
from lora.style_metrics import capitalisation_f1, length_ratios, orthographic_wer, punctuation_f1, raw_insertions
from lora.styled_targets import attach_original_text, own_text
from lora.term_recall import describe_terms, read_terms, term_result

log = logging.getLogger("lora")
LIBRISPEECH_PREFIXES = ("test-", "dev-", "train-")
WINDOW_SECONDS = 30.0  # longer clips go through the long-form path
LONG_MAX_SECONDS = 24 * 3600.0
RUN_METRICS_FILE = "real_metrics.json"  # a training run's folder: its report and quarantine list are not an eval's to replace


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora eval", description=__doc__.split("\n\n")[1])
    parser.add_argument("--model-id", default="auto", help="hub id, local dir or import name (default: auto)")
    parser.add_argument("--adapter-dir", default=None, help="optional LoRA adapter (a run's lora_adapter/)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", default=None, help="LibriSpeech-layout folder (default: ../shared/speech)")
    source.add_argument("--manifest", default=None, help="manifest file (JSONL/JSON/CSV/TSV/path list) or "
                        "a folder (LibriSpeech layout, a Kaldi data directory, a manifest.jsonl inside, or audio files with "
                        "same-name .txt/.lab transcripts)")
    add_dataset_args(parser, source)
    parser.add_argument("--subsets", default="librispeech",
                        help="with --data-dir: comma-separated folders, 'librispeech' (test-*/dev-*/train-*) or 'all'")
    parser.add_argument("--max-samples", type=int, default=0, help="cap on utterances (0 = all)")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per decoding batch")
    parser.add_argument("--target-policy", default=None, choices=TARGET_POLICIES,
                        help="label text style for the eval loss (default: the family's)")
    parser.add_argument("--compare-base", action="store_true",
                        help="with --adapter-dir: also decode with the base model; report its WER and the punctuation / "
                             "capitalisation F1 of the adapted output against the base output")
    parser.add_argument("--terms", default=None, metavar="FILE",
                        help="your vocabulary: one term or phrase per line; how often the model writes them where they "
                             "are said (with --compare-base: the base model beside it)")
    parser.add_argument("--output", required=True, help="eval.json to write")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def load_rows(args):

    if args.dataset:
        # only a streamed hub dataset stops early (it has no end); a local one is read whole, so --max-samples draws
        # from every speaker as it does from a --manifest, not from its first rows
        streamed = args.max_samples and detect_dataset_format(args.dataset) == "hub"
        read = read_dataset(args.dataset, dataset_options(args, args.max_samples * 4 if streamed else None))
        rows, bad, where = list(read.rows), read.bad, read.source
    elif args.manifest:
        read = read_source(Path(args.manifest))
        rows, bad, where = list(read.rows), read.bad, read.source
    else:
        root = Path(args.data_dir) if args.data_dir else default_speech_dir()
        if root is None:
            raise UserError("no data: pass --data-dir or --manifest")
        if not root.is_dir():
            raise UserError(f"--data-dir {root}: no such folder; pass a LibriSpeech-layout folder or --manifest FILE")
        available = list_subsets(root)
        if not available:
            raise UserError(f"{root}: no LibriSpeech-layout subsets in it (<subset>/<speaker>/<chapter>/*.trans.txt); for a "
                            "folder of audio files with same-name .txt transcripts or a manifest.jsonl, pass --manifest "
                            f"{root}")
        if args.subsets == "all":
            subsets = available
        elif args.subsets == "librispeech":
            subsets = [s for s in available if s.startswith(LIBRISPEECH_PREFIXES)]
        else:
            subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
        missing = sorted(set(subsets) - set(available))
        if missing or not subsets:
            raise UserError(f"{root}: subset(s) {missing or subsets} not found; available: {', '.join(available)}")
        rows, bad, where = read_librispeech_dir(root, subsets), (), f"{root} [{'+'.join(subsets)}]"
        attach_original_text(rows, root)
    rows = list(preflight(rows, bad, quarantine_path=str(Path(args.output).with_name("quarantine.jsonl")), require_text=True,
                          quiet=True, source=where, max_seconds=LONG_MAX_SECONDS).good)
    if args.max_samples:
        rows = select_balanced(rows, args.max_samples, args.seed)
    if not rows:
        raise UserError(f"{where}: no utterances to evaluate")
    return rows, where


def score_long(rows, transcribe_batch, batch_size: int, max_chunk_s: float) -> tuple[list[dict], float | None]:
    """Clips over 30 s through the long-form path (chunks <= max_chunk_s): per clip its transcript, WER and
    segment times."""
    if not rows:
        return [], None
    options = LongformOptions(max_chunk_s=max_chunk_s, batch_size=batch_size)
    out = []
    for u in rows:
        transcript = transcribe_any(u.samples(), transcribe_batch, options)
        out.append({"id": u.id, "seconds": u.extra["seconds"], "reference": u.text, "hypothesis": transcript.text,
                    "segments": [{"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3), "text": s.text}
                                 for s in transcript.segments]})
    pooled = score([x["id"] for x in out], [x["reference"] for x in out], [x["hypothesis"] for x in out])
    per_id = {s["id"]: s["wer"] for s in pooled["samples"]}
    for x in out:
        x["wer"] = per_id.get(x["id"])
    return out, pooled["wer"]


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.max_samples < 0:
        raise UserError(f"--max-samples {args.max_samples}: must be >= 0 (0 = all)")
    if args.compare_base and not args.adapter_dir:
        raise UserError("--compare-base needs --adapter-dir (it compares the adapted model with its base)")
    check_output_file(args.output)
    check_not_an_input(args.output, [args.manifest, args.dataset, args.terms])
    folder = Path(args.output).expanduser().parent
    if (folder / RUN_METRICS_FILE).is_file():  # the report and quarantine.jsonl written beside eval.json would replace the run's
        raise UserError(f"--output {args.output}: {folder} holds a training run ({RUN_METRICS_FILE}), whose report.md/html "
                        f"and quarantine.jsonl this eval's would replace; write it into a folder of its own (e.g. "
                        f"{folder / 'eval' / Path(args.output).name})")
    terms = read_terms(args.terms) if args.terms else ()
    rows, where = load_rows(args)
    long_rows = [u for u in rows if u.extra.get("seconds", 0.0) > WINDOW_SECONDS]
    rows = [u for u in rows if u.extra.get("seconds", 0.0) <= WINDOW_SECONDS]
    if not rows:  # before a model loads
        raise UserError(f"{where}: every clip is over {WINDOW_SECONDS:g} s; eval loss needs clips up to "
                        f"{WINDOW_SECONDS:g} s (cut long recordings with `lora segment`, or transcribe them with `lora stt`)")
    started = time.perf_counter()
    if args.adapter_dir:
        model, processor, family, resolved, run_info = load_with_adapter(Path(args.adapter_dir),
                                                                         args.model_id if args.model_id != "auto" else None)
    else:
        resolved, run_info = resolve_model_id(args.model_id), {}
        model, processor, family = load_base(resolved)
    trained_ids, trained_speakers = seen_in_training(rows + long_rows, run_info)
    for warning in leakage_warnings(rows + long_rows, run_info):
        log.warning("warning: %s", warning)
    transcribe = torch_transcriber(model, processor, family, args.batch_size)
    long_form, long_wer = score_long(long_rows, transcribe, args.batch_size, family.longform_chunk_s)
    long_base, long_base_wer = [], None
    if args.compare_base and long_rows:
        with base_model_view(model):  # the long clips' base transcripts: their WER and terms, before -> after
            long_base, long_base_wer = score_long(long_rows, transcribe, args.batch_size, family.longform_chunk_s)
        for clip, base_clip in zip(long_form, long_base, strict=True):
            clip["base_wer"] = base_clip["wer"]
    examples = prepare_dataset(rows, processor, family, args.target_policy)
    result = assess(model, processor, family, examples, examples, args.batch_size)
    refs, hyps = [own_text(u) for u in rows], [s["hypothesis"] for s in result["samples"]]
    ratio, over = length_ratios(refs, hyps)
    style = {"orthographic_wer": orthographic_wer(refs, hyps), "raw_insertions": raw_insertions(refs, hyps),
             "max_hyp_ref_word_ratio": ratio, "outputs_over_2x_ref": over}
    if args.compare_base:
        with base_model_view(model):  # the same weights without the LoRA update
            base_hyps = transcribe_examples(model, processor, family, examples, args.batch_size)
        base = score([e.id for e in examples], [e.text for e in examples], base_hyps)
        style |= {"base_model_wer": base["wer"], "punctuation_f1_vs_base": punctuation_f1(base_hyps, hyps).f1,
                  "capitalisation_f1_vs_base": capitalisation_f1(base_hyps, hyps).f1}
    if terms:
        # every clip counts, the long-form ones too (same order before and after, for the paired bootstrap)
        style["terms"] = term_result(args.terms, terms, result["samples"] + long_form,
                                     base["samples"] + long_base if args.compare_base else None, args.seed)
    result["samples"].sort(key=lambda s: (-s["wer"], s["id"]))
    report = EvalResult(
        **resolved.record(), adapter_dir=args.adapter_dir, family=family.name, data=where, utterances=len(examples),
        audio_seconds=sum(e.seconds for e in examples), wer_ci95=bootstrap_wer_ci(result["samples"], seed=args.seed),
        **result, wall_seconds=time.perf_counter() - started, versions=library_versions(),
        long_form=long_form, long_form_wer=long_wer, long_form_base_wer=long_base_wer,
        trained_utterances=len(trained_ids), trained_speakers=trained_speakers,
        **style)
    write_result(args.output, report)
    write_report(to_dict(report), Path(args.output).parent)
    low, high = report.wer_ci95
    scored = f"{resolved.model_id_used} + adapter" if args.adapter_dir else resolved.model_id_used
    print(f"{scored}: WER {100 * report.wer:.2f}% (95% CI {100 * low:.1f}-{100 * high:.1f}), "
          f"CER {100 * report.cer:.2f}%, eval loss {report.eval_loss:.3f} on {len(examples)} utterances "
          f"({report.audio_seconds:.0f} s) -> {args.output}")
    if args.compare_base:
        print(f"{resolved.model_id_used} (base, adapter off): WER {100 * report.base_model_wer:.2f}%")
    if report.terms:
        print(f"terms: {describe_terms(report.terms)}")
    if long_form:
        base_part = f" (base model {100 * long_base_wer:.2f}%)" if long_base_wer is not None else ""
        print(f"long-form: {len(long_form)} clip(s) over {WINDOW_SECONDS:g} s, WER {100 * long_wer:.2f}%{base_part}, "
              f"{sum(len(x['segments']) for x in long_form)} segments")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
