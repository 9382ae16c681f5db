"""Child-process entry: `python benchmarks/worker.py TASK ARGS_JSON RESULT_JSON` runs `tasks.TASK(**ARGS)`
and writes its result; the parent reads the child's own peak RSS from `os.wait4`."""

from __future__ import annotations

import json
import os
import sys

from lora.core.outputs import write_json_atomic

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # generate() repeats advisory warnings per batch


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import tasks

    task, args, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    write_json_atomic(out, getattr(tasks, task)(**args))


if __name__ == "__main__":
    main()
