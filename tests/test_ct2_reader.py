"""The CTranslate2 `model.bin` reader on small files written here, byte by byte."""

import struct

import numpy as np
import pytest

from lora.errors import UserError
from lora.importers.ct2_reader import read_ct2_model

DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model(path, variables: dict, aliases: dict | None = None, version: int = 6, bf16: dict | None = None):
    out = struct.pack("<I", version) + _string("TestSpec") + struct.pack("<I", 1)
    items = list(variables.items()) + list((bf16 or {}).items())
    out += struct.pack("<I", len(items))
    for name, array in items:
        is_bf16 = name in (bf16 or {})
        data = array.tobytes()
        out += _string(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape)
        out += struct.pack("<B", 5 if is_bf16 else DTYPE_IDS[array.dtype]) + struct.pack("<I", len(data)) + data
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(v) for a, v in aliases.items())
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.int16, np.int32])
def test_every_dtype_round_trips(tmp_path, dtype):
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    model = read_ct2_model(write_model(tmp_path / "model.bin", {"w": array}))
    assert model.variables["w"].dtype == dtype and np.array_equal(model.variables["w"], array)
    assert (model.version, model.spec_name, model.spec_revision) == (6, "TestSpec", 1)


def test_bfloat16_widens_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    model = read_ct2_model(write_model(tmp_path / "model.bin", {}, bf16={"b": bf16}))
    assert np.array_equal(model.variables["b"], values)


def test_aliases_and_scalars(tmp_path):
    emb = np.ones((4, 2), np.float16)
    path = write_model(tmp_path / "model.bin", {"emb": emb, "heads": np.array(6, np.int16)}, {"proj": "emb"})
    model = read_ct2_model(path)
    assert model.get("proj") is model.get("emb") and int(model.get("heads")) == 6


def test_truncated_file_names_the_file(tmp_path):
    path = write_model(tmp_path / "model.bin", {"w": np.zeros((8, 8), np.float32)})
    data = path.read_bytes()
    for cut in (2, 10, 40, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=rf"{path}: truncated CTranslate2 model"):
            read_ct2_model(path)


def test_unsupported_version_and_unknown_dtype(tmp_path):
    path = write_model(tmp_path / "model.bin", {"w": np.zeros(2, np.float32)}, version=99)
    with pytest.raises(UserError, match="format version 99 is not supported"):
        read_ct2_model(path)
    path = write_model(tmp_path / "model.bin", {"w": np.zeros(2, np.float32)})
    data = bytearray(path.read_bytes())
    dtype_at = data.index(b"w\0") + 2 + 1 + 4  # name, rank, one dim
    data[dtype_at] = 42
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="unknown CTranslate2 dtype id 42"):
        read_ct2_model(path)


def test_trailing_garbage_is_corruption(tmp_path):
    path = write_model(tmp_path / "model.bin", {"w": np.zeros(2, np.float32)})
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(UserError, match="trailing bytes"):
        read_ct2_model(path)
