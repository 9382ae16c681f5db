"""Reader of CTranslate2 `model.bin` files: variables (name -> numpy array) and aliases.

Layout (format versions 3-6; CTranslate2's `models/model.cc` is the reference):
    uint32 version
    [version >= 2] string spec_name, uint32 spec_revision
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank],
        [version >= 4] uint8 dtype, uint32 n_bytes, bytes data     (older: uint8 item_size, uint32 count, data)
    [version >= 3] uint32 n_aliases, then per alias: string alias, string variable
where `string` is uint16 length (including the trailing NUL) + bytes. Read with `struct`
because the format is this simple and `ctranslate2` exposes no reader of its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.errors import UserError

SUPPORTED_VERSIONS = range(3, 7)
# CTranslate2 DataType ids (include/ctranslate2/types.h). bfloat16 is widened exactly to float32.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


@dataclass(frozen=True)
class Ct2Model:
    path: Path
    version: int
    spec_name: str
    spec_revision: int
    variables: dict  # name -> np.ndarray
    aliases: dict  # alias -> variable name

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases."""
        return self.variables[self.aliases.get(name, name)]


class _Cursor:
    """Bounds-checked reads that name the file when it ends early."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise UserError(f"{self.path}: truncated CTranslate2 model (needs {n} bytes at offset {self.offset}, "
                            f"file has {len(self.data)}); reinstall the package that ships it")
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("H")).rstrip(b"\0").decode("utf-8")


def _array(raw: bytes, dtype, dims: list[int], name: str, path: Path) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dims)
    values = np.frombuffer(raw, dtype=dtype)
    if values.size != int(np.prod(dims, dtype=np.int64)):
        raise UserError(f"{path}: variable {name!r} has {values.size} values for shape {dims}; the file is corrupt")
    return values.reshape(dims).copy()


def read_ct2_model(path: str | Path) -> Ct2Model:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read CTranslate2 model ({exc.strerror})") from None
    cur = _Cursor(data, path)
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise UserError(f"{path}: CTranslate2 model format version {version} is not supported "
                        f"(supported: {SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1})")
    spec_name, spec_revision = cur.string(), cur.unpack("I")
    variables = {}
    for _ in range(cur.unpack("I")):
        name = cur.string()
        dims = [cur.unpack("I") for _ in range(cur.unpack("B"))]
        if version >= 4:
            dtype_id = cur.unpack("B")
            if dtype_id not in DTYPES:
                raise UserError(f"{path}: variable {name!r} has unknown CTranslate2 dtype id {dtype_id}")
            dtype, n_bytes = DTYPES[dtype_id], cur.unpack("I")
        else:
            item_size, count = cur.unpack("B"), cur.unpack("I")
            dtype, n_bytes = {4: np.float32, 2: np.int16, 1: np.int8}[item_size], item_size * count
        variables[name] = _array(cur.take(n_bytes), dtype, dims, name, path)
    aliases = {}
    for _ in range(cur.unpack("I")):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.offset != len(data):
        raise UserError(f"{path}: {len(data) - cur.offset} unexpected trailing bytes; the file is corrupt")
    return Ct2Model(path, version, spec_name, spec_revision, variables, aliases)
