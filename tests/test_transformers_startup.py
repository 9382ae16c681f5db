"""`import lora` makes transformers build its `models` index once per process, with the same result."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import types
from pathlib import Path

from lora.core import transformers_startup

# In a fresh process with `import lora` first: whether the scan was shared and answered from its cache, and the lazy
# `transformers.models` module's class -> module map against one built from a scan nothing cached (transformers' own).
PROBE = r'''
import json
import lora, transformers, transformers.models
from transformers.utils import import_utils
scan = import_utils.create_import_structure_from_path
cached = scan.__wrapped__ if getattr(scan, "_lora_shared", False) else scan  # the lru-cached function
uncached = cached.__wrapped__
own = import_utils._LazyModule("own", transformers.models.__file__,
                               import_utils.spread_import_structure(uncached(transformers.models.__file__)))
print(json.dumps({"shared": getattr(scan, "_lora_shared", False), "hits": cached.cache_info().hits,
                  "classes": sorted(transformers.models._class_to_module.items()),
                  "own_classes": sorted(own._class_to_module.items()),
                  "moonshine": transformers.models.moonshine.MoonshineForConditionalGeneration.__name__}))
'''


def test_models_index_is_built_once_and_unchanged():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["shared"] and seen["hits"] >= 1  # the second call reused the first scan
    assert seen["classes"] == seen["own_classes"] and len(seen["classes"]) > 1000
    assert seen["moonshine"] == "MoonshineForConditionalGeneration"


def test_finder_finds_nothing_and_applies_once(monkeypatch):
    calls = []

    def scan(module_path):
        calls.append(module_path)
        return {"from": str(module_path)}

    scan = functools.lru_cache(scan)
    fake = types.SimpleNamespace(create_import_structure_from_path=scan)
    monkeypatch.setitem(sys.modules, transformers_startup.IMPORT_UTILS, fake)
    finder = transformers_startup.ShareModelsScan()
    assert finder.find_spec("transformers.utils") is None and finder.applied is None
    assert finder.find_spec(transformers_startup.MODELS_PACKAGE) is None and finder.applied is True
    patched = fake.create_import_structure_from_path
    assert patched._lora_shared and patched.__wrapped__ is scan and not hasattr(patched, "cache_info")
    folder = Path(__file__).parent
    assert patched(__file__)["from"] == str(folder)  # a file -> its folder
    assert patched(str(folder)) is patched(folder) is patched(__file__) and calls == [folder]  # one scan for all three
    assert finder.find_spec(transformers_startup.MODELS_PACKAGE) is None  # applied once
    assert transformers_startup.share_models_scan() and fake.create_import_structure_from_path is patched


def test_other_transformers_versions_are_left_alone(monkeypatch):
    def scan(module_path):  # not lru-cached: nothing to share
        return {}

    fake = types.SimpleNamespace(create_import_structure_from_path=scan)
    monkeypatch.setitem(sys.modules, transformers_startup.IMPORT_UTILS, fake)
    assert transformers_startup.share_models_scan() is False and fake.create_import_structure_from_path is scan
    monkeypatch.setitem(sys.modules, transformers_startup.IMPORT_UTILS, types.SimpleNamespace())
    assert transformers_startup.share_models_scan() is False
