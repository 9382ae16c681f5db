"""The CTranslate2 `model.bin` reader on small files written here, following the format byte by byte."""

import struct

import numpy as np
import pytest

from lora.core.errors import UserError
from lora.weight_formats.ct2_reader import bfloat16_to_float32, read_ct2_model

DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, version: int, dtype_id: int | None = None) -> bytes:
    """One variable record; `array` holds the stored values (uint16 bit patterns for bfloat16)."""
    out = _string(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape)
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    if version >= 4:
        return out + struct.pack("<BI", dtype_id, len(data)) + data
    return out + struct.pack("<BI", array.itemsize, array.size) + data


def model_bytes(variables: dict, aliases: dict | None = None, version: int = 6) -> bytes:
    """A `model.bin` as ctranslate2's `_serialize` writes it. `variables`: name -> (ct2 dtype, array)."""
    out = struct.pack("<I", version)
    if version >= 2:
        out += _string("TestSpec") + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, (dtype, array) in variables.items():
        out += _variable(name, array, version, DTYPE_IDS[dtype])
    if version >= 3:
        aliases = aliases or {}
        out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(v) for a, v in aliases.items())
    return out


def write(tmp_path, data: bytes):
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int16", "int32"])
def test_every_numpy_dtype_round_trips(tmp_path, dtype):
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    model = read_ct2_model(write(tmp_path, model_bytes({"enc/w": (dtype, array)})))
    var = model.variables["enc/w"]
    assert (var.name, var.shape, var.dtype) == ("enc/w", (3, 4), dtype)
    assert var.array.dtype == np.dtype(dtype) and np.array_equal(var.array, array) and var.array.flags.writeable
    assert (model.version, model.spec_name, model.spec_revision) == (6, "TestSpec", 3)


def test_bfloat16_widens_exactly_to_float32(tmp_path):
    values = np.array([[1.0, -2.5], [3.140625, -0.0078125]], dtype=np.float32)  # exactly representable
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    model = read_ct2_model(write(tmp_path, model_bytes({"b": ("bfloat16", bits)})))
    var = model.variables["b"]
    assert var.dtype == "bfloat16" and var.array.dtype == np.float32 and np.array_equal(var.array, values)
    assert np.array_equal(bfloat16_to_float32(np.array([0x7F80], np.uint16)), [np.inf])


def test_aliases_and_scalars(tmp_path):
    emb = np.ones((4, 2), np.float16)
    data = model_bytes({"emb": ("float16", emb), "heads": ("int32", np.array(6, np.int32))}, {"proj": "emb"})
    model = read_ct2_model(write(tmp_path, data))
    assert model.aliases == {"proj": "emb"} and "proj" in model and "nope" not in model
    assert model.get("proj") is model.get("emb") and model.variables["heads"].shape == () and int(model.get("heads")) == 6
    with pytest.raises(KeyError, match="no variable or alias 'nope'"):
        model.get("nope")


def test_legacy_versions(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    v3 = read_ct2_model(write(tmp_path, model_bytes({"w": ("float32", array)}, {"a": "w"}, version=3)))
    assert v3.version == 3 and v3.variables["w"].dtype == "float32" and np.array_equal(v3.get("a"), array)
    v1 = read_ct2_model(write(tmp_path, model_bytes({"w": ("int16", array.astype(np.int16))}, version=1)))
    assert (v1.spec_name, v1.spec_revision, v1.aliases) == ("", 1, {}) and v1.variables["w"].dtype == "int16"


def test_truncated_file_names_the_file(tmp_path):
    data = model_bytes({"w": ("float32", np.zeros((8, 8), np.float32))}, {"x": "w"})
    path = tmp_path / "model.bin"
    for cut in (0, 2, 10, 40, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=rf"^{path}: truncated CTranslate2 model"):
            read_ct2_model(path)


def test_unsupported_version(tmp_path):
    for version in (0, 7, 99):
        path = write(tmp_path, model_bytes({"w": ("float32", np.zeros(2, np.float32))}, version=6))
        path.write_bytes(struct.pack("<I", version) + path.read_bytes()[4:])
        with pytest.raises(UserError, match=rf"{path}: CTranslate2 model format version {version} is not supported"):
            read_ct2_model(path)


def test_unknown_dtype_id(tmp_path):
    data = bytearray(model_bytes({"w": ("float32", np.zeros(2, np.float32))}))
    data[data.index(b"w\0") + 2 + 1 + 4] = 42  # after the name, the rank and one dim
    path = write(tmp_path, bytes(data))
    with pytest.raises(UserError, match=rf"{path}: variable 'w' has unknown CTranslate2 dtype id 42"):
        read_ct2_model(path)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d + b"xx", "2 unexpected trailing bytes"),
    (lambda d: d.replace(struct.pack("<I", 8), struct.pack("<I", 6), 1), "holds 6 bytes, shape \\[2\\] of float32 needs 8"),
    (lambda d: d.replace(b"emb\0", b"emx\0", 1), "alias 'p' points to missing variable 'emb'"),
    (lambda d: d.replace(b"w\0", b"w!", 1), "lacks its NUL terminator"),
])
def test_corruption_is_a_clear_error(tmp_path, damage, message):
    data = model_bytes({"w": ("float32", np.zeros(2, np.float32)), "emb": ("int8", np.zeros(1, np.int8))}, {"p": "emb"})
    path = write(tmp_path, damage(data))
    with pytest.raises(UserError, match=rf"{path}: .*{message}"):
        read_ct2_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=rf"{tmp_path / 'nope.bin'}: cannot read CTranslate2 model"):
        read_ct2_model(tmp_path / "nope.bin")
