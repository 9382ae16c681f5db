"""Reader of CTranslate2 `model.bin` files: header, variables (name, shape, dtype, numpy data), aliases.

Why our own reader: `ctranslate2` runs a model but exposes no way to read its weights back, and the
format is a plain little-endian stream, so `struct` + `numpy` read it without the runtime.

Layout, as `ctranslate2/specs/model_spec.py::_serialize` writes it (binary version 6) and
`src/models/model.cc` reads it (versions 1-6):

    uint32 version
    [version >= 2]  string spec_name, uint32 spec_revision        (version 1: no name, revision 1)
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank]
        [version >= 4]  uint8 dtype_id, uint32 n_bytes, bytes data
        [version <= 3]  uint8 item_size, uint32 n_items, bytes data (item_size 4/2/1 = float32/int16/int8)
    [version >= 3]  uint32 n_aliases, then per alias: string alias, string variable_name

`string` is a uint16 byte length that counts a trailing NUL, then the bytes. Versions 4-6 share the
variable layout (5 and 6 changed what sits beside `model.bin`, not the file itself).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.core.errors import UserError

SUPPORTED_VERSIONS = range(1, 7)
# DataType enum order of include/ctranslate2/types.h (and `_dtype_to_type_id` in the Python specs).
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
# How each stored dtype is laid out on disk; bfloat16 is read as raw uint16 bits and widened.
STORAGE = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2", "bfloat16": "<u2"}
# Binary versions <= 3 stored an item size instead of a dtype id (model.cc `get_dtype_from_item_size`).
LEGACY_ITEM_SIZES = {4: "float32", 2: "int16", 1: "int8"}


@dataclass(frozen=True)
class Ct2Variable:
    """One stored tensor. `dtype` is the CTranslate2 dtype on disk; `array` is numpy
    (same dtype, except bfloat16, which numpy lacks: widened exactly to float32)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    array: np.ndarray


@dataclass(frozen=True)
class Ct2Model:
    """A parsed `model.bin`. `aliases` maps a name to the variable it shares storage with
    (e.g. Whisper's decoder output projection -> the token embeddings)."""

    path: Path
    version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str]

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def get(self, name: str) -> np.ndarray:
        """The array of a variable or alias; a KeyError names the file when absent."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise KeyError(f"{self.path}: no variable or alias {name!r}")
        return self.variables[target].array


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns to float32 exactly: bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def decode_array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw little-endian bytes -> a writable numpy array of `shape` (callers check the byte count)."""
    values = np.frombuffer(raw, dtype=STORAGE[dtype])
    if dtype == "bfloat16":
        return bfloat16_to_float32(values).reshape(shape)
    return values.astype(values.dtype.newbyteorder("="), copy=True).reshape(shape)


class _Cursor:
    """Bounds-checked sequential reads that name the file when it ends early."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = memoryview(data), path, 0

    def corrupt(self, what: str) -> UserError:
        return UserError(f"{self.path}: {what}; the CTranslate2 model file is corrupt, "
                         f"reinstall the package that ships it")

    def take(self, n: int) -> memoryview:
        if self.offset + n > len(self.data):
            raise UserError(f"{self.path}: truncated CTranslate2 model (needs {n} bytes at offset {self.offset}, "
                            f"the file has {len(self.data)}); reinstall the package that ships it")
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        if not raw.endswith(b"\0"):
            raise self.corrupt(f"string at offset {self.offset - len(raw)} lacks its NUL terminator")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"string at offset {self.offset - len(raw)} is not UTF-8") from None


def _read_variable(cur: _Cursor, version: int) -> Ct2Variable:
    name = cur.string()
    shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
    if version >= 4:
        dtype_id = cur.unpack("B")
        if dtype_id >= len(DTYPE_NAMES):
            raise UserError(f"{cur.path}: variable {name!r} has unknown CTranslate2 dtype id {dtype_id} "
                            f"(known: {', '.join(f'{i}={n}' for i, n in enumerate(DTYPE_NAMES))})")
        dtype, n_bytes = DTYPE_NAMES[dtype_id], cur.unpack("I")
    else:
        item_size = cur.unpack("B")
        if item_size not in LEGACY_ITEM_SIZES:
            raise cur.corrupt(f"variable {name!r} has item size {item_size}")
        dtype, n_bytes = LEGACY_ITEM_SIZES[item_size], item_size * cur.unpack("I")
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(STORAGE[dtype]).itemsize
    if n_bytes != expected:
        raise cur.corrupt(f"variable {name!r} holds {n_bytes} bytes, shape {list(shape)} of {dtype} needs {expected}")
    return Ct2Variable(name, shape, dtype, decode_array(cur.take(n_bytes), dtype, shape))


def parse_ct2_model(data: bytes, path: Path) -> Ct2Model:
    """Parse the bytes of a `model.bin`; `path` only names the file in errors."""
    cur = _Cursor(data, path)
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise UserError(f"{path}: CTranslate2 model format version {version} is not supported "
                        f"(supported: {SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1})")
    spec_name, spec_revision = (cur.string(), cur.unpack("I")) if version >= 2 else ("", 1)
    variables: dict[str, Ct2Variable] = {}
    for _ in range(cur.unpack("I")):
        variable = _read_variable(cur, version)
        variables[variable.name] = variable
    aliases: dict[str, str] = {}
    for _ in range(cur.unpack("I") if version >= 3 else 0):
        alias, target = cur.string(), cur.string()
        if target not in variables:
            raise cur.corrupt(f"alias {alias!r} points to missing variable {target!r}")
        aliases[alias] = target
    if cur.offset != len(data):
        raise cur.corrupt(f"{len(data) - cur.offset} unexpected trailing bytes")
    return Ct2Model(path, version, spec_name, spec_revision, variables, aliases)


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Read and parse a CTranslate2 `model.bin` (the whole file: tens of MB for small models)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read CTranslate2 model ({exc.strerror})") from None
    return parse_ct2_model(data, path)
