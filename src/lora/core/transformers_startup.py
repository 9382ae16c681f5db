"""One fix to transformers' own start-up, installed by `import lora` (this file imports nothing heavy).

transformers 5.x builds the lazy import structure of its `models` package twice in every process that loads a
model: once in `transformers/__init__.py` (`define_import_structure(Path(...) / "models", prefix="models")`) and
again in `transformers/models/__init__.py` (`define_import_structure(__file__)`). Both calls end in the
lru-cached `create_import_structure_from_path`, but under two keys (a Path to the folder, then the str path of
its `__init__.py`), so the second reads and parses the ~2,600 source files of `models/` again: importing
`transformers.models` took 0.37 s without this and 0.02 s with it (medians of 8, the 2-core bench machine,
benchmarks/results/transformers_startup_ab.json). Just before `transformers.models` is
imported, `share_models_scan` normalises that argument to the folder's Path, so the second call is a cache hit.
The result is the same either way: the function itself maps a file to its folder before scanning.

No transformers API does this (the scan is internal), hence the small patch; it changes nothing where the
function is missing or not lru-cached (another transformers version), and is never applied twice.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

MODELS_PACKAGE = "transformers.models"
IMPORT_UTILS = "transformers.utils.import_utils"
SCAN = "create_import_structure_from_path"


def share_models_scan() -> bool:
    """Route `create_import_structure_from_path` through the folder's Path; True when the patch is in place."""
    import_utils = sys.modules.get(IMPORT_UTILS)  # loaded by `import transformers`; never imported from here
    scan = getattr(import_utils, SCAN, None)
    if getattr(scan, "_lora_shared", False):
        return True
    if scan is None or not hasattr(scan, "cache_info"):
        return False

    @functools.wraps(scan)
    def shared(module_path):
        folder = os.path.dirname(module_path) if os.path.isfile(module_path) else module_path
        return scan(Path(folder))

    shared._lora_shared = True
    setattr(import_utils, SCAN, shared)
    return True


class ShareModelsScan:
    """A `sys.meta_path` entry that finds nothing: when `transformers.models` is about to be imported (after
    `transformers` itself, which made the first scan), it applies `share_models_scan` once."""

    def __init__(self) -> None:
        self.applied: bool | None = None  # None: transformers.models not imported yet

    def find_spec(self, name, path=None, target=None):
        if self.applied is None and name == MODELS_PACKAGE:
            self.applied = share_models_scan()
        return None  # the usual finders import the package


def install() -> None:
    """Put the finder first on `sys.meta_path` (once per process; a no-op when transformers.models is loaded)."""
    if MODELS_PACKAGE in sys.modules or any(isinstance(f, ShareModelsScan) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, ShareModelsScan())
