"""`lora check MANIFEST_OR_DIR|--dataset D [--output DIR | --quarantine PATH] [--workers N] [--model-id M [--verify-with-model]
[--suggest-terms FILE]] [hygiene thresholds]`

Checks every row of a manifest (JSONL/JSON/CSV/TSV/path list), a speech folder or a Hugging Face-style
dataset (--dataset, as `lora train` reads it) the way every lora command will (see lora.data.preflight),
runs the data-hygiene checks on the decoded audio and transcripts (lora.data.hygiene: silent, dc_constant,
clipped, chars_per_second, duplicate_audio by decoded-sample hash; unwritable_chars with --model-id, which
loads only the tokenizer; model_disagrees with --verify-with-model), prints a summary table with the warnings, and lists the
unusable rows in a quarantine JSONL (origin file:line, id, reason, detail). Exit 0 when at least
--min-good rows are usable, 2 (one line on stderr) otherwise.

Quarantine file: --quarantine PATH is always written (empty when nothing is bad), and so is
DIR/quarantine.jsonl with --output DIR; otherwise quarantine.jsonl is written beside the manifest
(for a folder: ./quarantine.jsonl) only when there are bad rows, so a clean check leaves nothing
behind (it removes an earlier check's list there, which would name fixed rows; a file of that name that is
not a check's list is never replaced: `lora segment` writes its quarantined clips beside its manifest under that
name). The path written is printed. Warnings (kept rows worth a look) are listed in the table only.

--suggest-terms FILE (with --model-id): the words and phrases that base model misses in the rows
(lora.term_recall.missed_terms), written as a --terms file to edit; the rows are transcribed once for it and
--verify-with-model together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_output_file, write_text_atomic
from lora.data.hf_sources import read_dataset
from lora.data.hygiene import HygieneOptions, disagreements, transcribe_rows
from lora.data.manifest import BadRow, read_source
from lora.data.preflight import check_rows, write_quarantine
from lora.data.records import Utterance
from lora.scripts.dataset_args import add_dataset_args, dataset_options
from lora.term_recall import missed_terms, suggested_terms_file

log = logging.getLogger("lora")
QUARANTINE_FILE = "quarantine.jsonl"
CHECK_ROW_FIELDS = {"origin", "id", "reason", "detail"}  # a row of the list a check writes (BadRow.record())


def hygiene_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora check", description=__doc__.split("\n\n")[1],
                            epilog=__doc__.split("\n\n")[2])
    parser.add_argument("source", metavar="MANIFEST_OR_DIR", nargs="?", default=None, help="manifest file or "
                        "a folder (LibriSpeech layout, a Kaldi data directory, a manifest.jsonl inside, or audio files with "
                        "same-name .txt/.lab transcripts); or --dataset instead")
    add_dataset_args(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--quarantine", type=Path, default=None, metavar="PATH",
                       help="where to list bad rows (always written)")
    where.add_argument("--output", type=Path, default=None, metavar="DIR", help="write DIR/quarantine.jsonl (always)")
    parser.add_argument("--min-seconds", type=float, default=0.1, metavar="S", help="shortest usable utterance (default 0.1)")
    parser.add_argument("--max-seconds", type=float, default=30.0, metavar="S", help="longest usable utterance (default 30)")
    parser.add_argument("--min-good", type=int, default=1, metavar="N", help="fail unless this many rows are usable (default 1)")
    parser.add_argument("--require-text", action="store_true",
                        help="rows without a transcript (plain path lists) are bad too, as for training")
    parser.add_argument("--workers", type=int, default=0, metavar="N", help="parallel probes (default: 4 per core, at most 16)")
    parser.add_argument("--no-hygiene", action="store_true", help="skip the data-hygiene checks (file checks only)")
    parser.add_argument("--model-id", default=None,
                        help="check that the model's tokenizer can write every transcript (loads the tokenizer only)")
    parser.add_argument("--verify-with-model", action="store_true",
                        help="transcribe every good row with --model-id; warn where CER > --max-model-cer (likely mislabelled)")
    parser.add_argument("--suggest-terms", type=Path, default=None, metavar="FILE",
                        help="with --model-id: transcribe the rows with that base model and write the words it misses "
                             "at least half the times they are said (a --terms file to edit)")
    parser.add_argument("--max-model-cer", type=float, default=0.8, metavar="X", help="see --verify-with-model (default 0.8)")
    hygiene = parser.add_argument_group("hygiene thresholds (lora.data.hygiene explains each default)")
    for f in dataclasses.fields(HygieneOptions):
        hygiene.add_argument(hygiene_flag(f.name), dest=f"hyg_{f.name}", type=float, default=f.default, metavar="X",
                             help=f"{f.metadata['help']} (default {f.default:g})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check_numbers(args) -> None:
    """Ranges argparse's types cannot say, before anything is read (nan and inf pass a `value < 0` test)."""
    for flag, value in (("--min-seconds", args.min_seconds), ("--max-seconds", args.max_seconds),
                        ("--max-model-cer", args.max_model_cer)):
        if not math.isfinite(value):
            raise UserError(f"{flag} {value:g}: must be a finite number")
        if value < 0:
            raise UserError(f"{flag} {value:g}: must be >= 0")
    if args.min_good < 0:
        raise UserError(f"--min-good {args.min_good}: must be >= 0 (0 = never fail on the count)")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be >= 0 (0 = default)")


def hygiene_options(args) -> HygieneOptions | None:
    if args.no_hygiene:
        return None
    values = {f.name: getattr(args, f"hyg_{f.name}") for f in dataclasses.fields(HygieneOptions)}
    for name, value in values.items():
        if not value >= 0:
            raise UserError(f"{hygiene_flag(name)} {value:g}: must be >= 0")
    if values["min_chars_per_second"] >= values["max_chars_per_second"]:
        raise UserError(f"--min-chars-per-second {values['min_chars_per_second']:g} must be below "
                        f"--max-chars-per-second {values['max_chars_per_second']:g}")
    if values["clipped_warn_share"] > values["clipped_quarantine_share"]:
        raise UserError("--clipped-warn-share must not exceed --clipped-quarantine-share")
    return HygieneOptions(**values)


def load_tokenizer(model_id: str):
    """The tokenizer of `--model-id` alone (no weights)."""
    from transformers import AutoTokenizer  # deferred: heavy

    from lora.model_utils import resolve_model_id

    resolved = resolve_model_id(model_id)
    try:
        return AutoTokenizer.from_pretrained(resolved.path)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load the tokenizer of {model_id!r}: {str(exc).splitlines()[0]}") from None


def base_transcripts(model_id: str, rows) -> list[tuple[Utterance, str]]:
    """The rows with a transcript, each with the base model's hypothesis (--verify-with-model, --suggest-terms)."""
    from lora.longform import torch_transcriber  # deferred: torch and the model load only with these flags
    from lora.model_utils import load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id(model_id))
    texted = [u for u in rows if u.extra.get("has_text", True) and u.text.strip()]
    return list(zip(texted, transcribe_rows((u.samples() for u in texted), torch_transcriber(model, processor, family))))


def model_warnings(heard: list[tuple[Utterance, str]], max_cer: float) -> list[BadRow]:
    """--verify-with-model: rows whose transcript the base model disagrees with (warnings)."""
    by_id = {u.id: u for u, _ in heard}
    flagged = disagreements([(u.id, u.text, hyp) for u, hyp in heard], max_cer)
    return [BadRow(by_id[i].origin, f"hygiene: {f.check}", i, f"{f.detail}; {f.advice}") for i, f in flagged]


def default_quarantine(source: Path) -> Path:
    """Where the quarantine goes without --quarantine / --output: beside the manifest, for a folder ./quarantine.jsonl."""
    return source.with_name(QUARANTINE_FILE) if source.is_file() else Path(QUARANTINE_FILE)


def is_quarantine_list(path: Path) -> bool:
    """Is `path` a quarantine list (every line a JSON object with "origin" and "reason"), as a check writes it?"""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return all(isinstance(row := json.loads(line), dict) and {"origin", "reason"} <= row.keys() for line in lines)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def is_check_list(path: Path) -> bool:
    """Is `path` a list a check wrote (every row BadRow.record()'s fields)? `lora segment`'s quarantine beside the
    manifest it writes is a quarantine list too, of clips (times, text, hypothesis): another command's, kept."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return all(json.loads(line).keys() == CHECK_ROW_FIELDS for line in lines)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def check_default_quarantine(args, source: Path) -> None:
    """Before anything is read: the default quarantine path must be free or an earlier check's list."""
    if args.quarantine is None and args.output is None:
        default = default_quarantine(source)
        if default.exists() and not is_quarantine_list(default):
            raise UserError(f"{default}: exists and is not a quarantine list, so it is kept; pass --quarantine PATH "
                            "(or --output DIR) for the list of bad rows")


def quarantine_target(args, source: Path, has_bad: bool) -> Path | None:
    """The file to write, or None. The default file is written only when a row is bad; it replaces an earlier check's
    list, never another file of that name; a clean check removes an earlier check's list (it would list fixed rows)."""
    if args.quarantine is not None:
        return args.quarantine
    if args.output is not None:
        return args.output / QUARANTINE_FILE
    default = default_quarantine(source)
    if default.is_file() and not is_check_list(default):  # lora segment's list of its quarantined clips
        if has_bad:
            raise UserError(f"{default}: another command's quarantine list (lora segment's clips), so it is kept; pass "
                            "--quarantine PATH (or --output DIR) for the list of bad rows")
        return None
    if not has_bad:
        if default.is_file():
            default.unlink()
            print(f"removed {default}: an earlier check's quarantine (no row is bad now)")
        return None
    return default


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if (args.source is None) == (args.dataset is None):
        raise UserError("check one source: a MANIFEST_OR_DIR, or --dataset D (a Hugging Face-style dataset)")
    args.source = args.source or args.dataset  # where the default quarantine list goes is decided from it
    check_numbers(args)
    if args.quarantine is not None:
        check_output_file(args.quarantine, "--quarantine")
    if args.output is not None:
        check_output_file(args.output / QUARANTINE_FILE, "--output")
    check_default_quarantine(args, Path(args.source))
    if args.suggest_terms and not args.model_id:
        raise UserError("--suggest-terms needs --model-id M (the base model whose misses it lists)")
    if args.suggest_terms:
        check_output_file(args.suggest_terms, "--suggest-terms")
        if args.suggest_terms.expanduser().exists():  # a terms file edited as told ("keep the ones that matter")
            raise UserError(f"--suggest-terms {args.suggest_terms}: exists (a terms file, perhaps edited since); pass a "
                            "new file name, or delete it to write it again")
    if args.verify_with_model and not args.model_id:
        raise UserError("--verify-with-model needs --model-id M (the base model to transcribe with)")
    if args.verify_with_model and args.no_hygiene:
        raise UserError("--verify-with-model is a hygiene check; drop --no-hygiene")
    hygiene = hygiene_options(args)
    tokenizer = load_tokenizer(args.model_id) if args.model_id and hygiene is not None else None

    read = read_dataset(args.dataset, dataset_options(args)) if args.dataset else read_source(args.source)
    report = check_rows(read.rows, read.bad, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                        require_text=args.require_text, quiet=args.quiet, source=read.source, workers=args.workers,
                        hygiene=hygiene, tokenizer=tokenizer)
    heard = base_transcripts(args.model_id, report.good) if (args.verify_with_model or args.suggest_terms) and report.good else []
    if args.verify_with_model and heard:
        extra = model_warnings(heard, args.max_model_cer)
        report = dataclasses.replace(report, warnings=tuple(sorted([*report.warnings, *extra], key=lambda b: b.origin)))
    try:
        target = quarantine_target(args, Path(args.source), bool(report.bad))
    except UserError:
        print(report.render(), flush=True)  # the rows were checked: their table, then the one line
        raise
    if target is not None:
        report = dataclasses.replace(report, quarantine=write_quarantine(target, report.bad))
    print(report.render(), flush=True)
    if hygiene is not None:
        ran = "silent, dc_constant, clipped, chars_per_second, duplicate_audio"
        ran += ", unwritable_chars" if tokenizer is not None else ""
        ran += ", model_disagrees" if args.verify_with_model else ""
        print(f"\nhygiene     {ran}: {len(report.warnings)} warning(s)")
    if report.quarantine is None:
        print("\nnothing quarantined (no file written)")
    if args.suggest_terms:
        terms = missed_terms([u.text for u, _ in heard], [hyp for _, hyp in heard])
        write_text_atomic(args.suggest_terms, suggested_terms_file(terms, args.model_id, read.source))
        print(f"\nterms       {len(terms)} word(s) or phrase(s) {args.model_id} missed at least half the times they are said "
              f"-> {args.suggest_terms} (edit it, then: lora train ... --terms {args.suggest_terms})")
    report.require(args.min_good)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
