"""Thin entry point: see lora.scripts.scale_manifest (an N-hour manifest of real clips for scale tests)."""

from lora.scripts.scale_manifest import main

if __name__ == "__main__":
    raise SystemExit(main())
