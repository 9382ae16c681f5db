"""Thin entry point: see lora.scripts.build_manifest."""

from lora.scripts.build_manifest import main

if __name__ == "__main__":
    raise SystemExit(main())
