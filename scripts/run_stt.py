"""Thin entry point: see lora.scripts.run_stt."""

from lora.scripts.run_stt import main

if __name__ == "__main__":
    raise SystemExit(main())
