"""`lora-export --adapter-dir D --format onnx|ct2 --output DIR`

Merges a LoRA adapter into its base model and exports it for an on-device runtime: Moonshine to
ONNX (onnxruntime), Whisper to CTranslate2. Then checks the export on real utterances: WER of the
exported model vs the merged PyTorch model, and speed of the exported model vs the original packaged
model in the same runtime. Writes DIR/export_report.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.export import REPORT_FILE, ExportOptions, export_adapter


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora export", description=__doc__.split("\n\n")[1])
    parser.add_argument("--adapter-dir", required=True, help="a run's lora_adapter/ folder")
    parser.add_argument("--format", required=True, help="onnx (Moonshine, onnxruntime) or ct2 (Whisper, CTranslate2)")
    parser.add_argument("--output", required=True, help="folder to write the exported model and export_report.json into")
    parser.add_argument("--model-id", default=None, help="base model (default: the one recorded in the adapter)")
    parser.add_argument("--manifest", default=None,
                        help="utterances for the parity check (default: the LibriSpeech folders of ../shared/speech)")
    parser.add_argument("--max-samples", type=int, default=0, help="cap on parity utterances (0 = all)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)

    report = export_adapter(ExportOptions(Path(args.adapter_dir), args.format, Path(args.output), args.model_id,
                                          args.manifest, args.max_samples))
    wer, speed = report["wer"], report["speed_audio_seconds_per_second"]
    print(f"exported {report['family']} -> {args.format} in {args.output} ({report['export_seconds']:.1f} s)")
    print(f"WER on {report['utterances']} utterances: exported {100 * wer['exported']['wer']:.2f}%, "
          f"PyTorch merged {100 * wer['pytorch_merged']['wer']:.2f}% (gap {report['wer_gap_points']:.2f} points); "
          f"identical transcripts {100 * report['identical_transcripts_vs_pytorch']:.0f}%")
    print(f"speed in {report['runtime']}: exported {speed['exported']:.1f}x real time, original {speed['original']:.1f}x "
          f"(ratio {report['speed_ratio_exported_vs_original']:.2f})")
    print(f"wrote {Path(args.output) / REPORT_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
