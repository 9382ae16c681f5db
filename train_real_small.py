"""Thin entry point: see lora.runners.real_small."""

from lora.runners.real_small import main

if __name__ == "__main__":
    raise SystemExit(main())
