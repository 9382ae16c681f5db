"""Thin entry point: see lora.scripts.join_utterances."""

from lora.scripts.join_utterances import main

if __name__ == "__main__":
    raise SystemExit(main())
