"""`run_stt.py --adapter-dir D --processor-dir P --audio-list MANIFEST --output artifact_test.json`

Transcribes a manifest (audio as float arrays or file paths) or a plain list of audio paths with a
base model + LoRA adapter, and scores it (normalised WER) when references are present. The base
model defaults to the one recorded in the adapter. Warns when an utterance or speaker of the
manifest was in the adapter's training data.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lora.core.audio import SAMPLE_RATE
from lora.core.cli import run_cli, setup_logging
from lora.core.errors import UserError
from lora.data.hf_sources import read_dataset
from lora.data.manifest import read_source
from lora.data.preflight import preflight
from lora.data_loader import Example
from lora.decoding import transcribe_examples
from lora.evaluation import score
from lora.model_utils import load_with_adapter
from lora.results import SttArtifact, write_result
from lora.scripts.dataset_args import add_dataset_args, dataset_options

log = logging.getLogger("lora")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora stt", description=__doc__.split("\n\n")[1])
    parser.add_argument("--adapter-dir", required=True, help="a run's lora_adapter/ folder")
    parser.add_argument("--processor-dir", default=None, help="a run's processor/ folder (default: the base model's)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-list", help="manifest (JSONL/JSON/CSV/TSV) or a text file of audio paths")
    add_dataset_args(parser, source)
    parser.add_argument("--output", required=True, help="JSON artifact to write")
    parser.add_argument("--model-id", default=None, help="base model (default: the one recorded in the adapter)")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per decoding batch")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def leakage_warnings(rows, run_info: dict) -> list[str]:
    """Utterances/speakers of the manifest that the adapter was trained on."""
    train_ids, train_speakers = set(run_info.get("train_ids", [])), set(run_info.get("train_speakers", []))
    warnings = [f"utterance {u.id} was in the adapter's training data" for u in rows if u.id in train_ids]
    shared = sorted({u.speaker for u in rows if u.speaker and u.speaker in train_speakers})
    if shared:
        warnings.append(f"speaker(s) {', '.join(shared)} were in the adapter's training data: WER is not held-out")
    return warnings


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)

    read = read_dataset(args.dataset, dataset_options(args)) if args.dataset else read_source(Path(args.audio_list))
    if not read.rows:
        raise UserError(f"{args.audio_list or args.dataset}: the manifest or dataset has no usable rows; add at least one audio entry")

    report = preflight(read.rows, read.bad, require_text=False, quiet=True, source=read.source)

    model, processor, family, resolved, info = load_with_adapter(Path(args.adapter_dir), args.model_id)
    if args.processor_dir:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.processor_dir)
    for warning in leakage_warnings(report.good, info):
        log.warning("warning: %s", warning)
    examples, errors = [], [{"id": b.id, "origin": b.origin, "reason": b.reason} for b in report.bad]
    for u in report.good:
        try:
            samples = u.samples()
        except Exception as exc:  # one unreadable file must not lose the others
            errors.append({"id": u.id, "origin": u.origin, "reason": f"cannot decode audio: {exc}"})
            continue
        examples.append(Example(u.id, u.speaker, u.text, family.featurize(processor, samples), [], len(samples) / SAMPLE_RATE))
    hyps = transcribe_examples(model, processor, family, examples, args.batch_size)
    scored = [i for i, e in enumerate(examples) if e.text.strip()]
    result = score([examples[i].id for i in scored], [examples[i].text for i in scored], [hyps[i] for i in scored])
    per_id = {s["id"]: s["wer"] for s in result["samples"]}
    samples = [{"id": e.id, "reference": e.text or None, "hypothesis": h, "wer": per_id.get(e.id)} for e, h in zip(examples, hyps)]
    artifact = SttArtifact(**resolved.record(), adapter_dir=str(args.adapter_dir), processor_dir=args.processor_dir,
                           samples=samples, wer=result["wer"], cer=result["cer"], errors=errors)
    write_result(args.output, artifact)
    wer = "n/a (no references)" if result["wer"] is None else f"{100 * result['wer']:.1f}%"
    print(f"transcribed {len(examples)} utterances, WER {wer}, {len(errors)} errors -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
