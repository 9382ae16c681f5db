"""Thin entry point: see lora.runners.poc (the smallest proof that LoRA learns on real audio)."""

from lora.runners.poc import main

if __name__ == "__main__":
    raise SystemExit(main())
