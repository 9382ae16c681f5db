"""Evaluate the constant-only parts of an ORT graph: the weight dequantisation chains.

Why: quantised exports store a weight as an int8 initializer plus the small sub-graph that turns
it back into floats at run time (`Cast -> Mul(scale) -> Add(offset)`, or `DequantizeLinear`,
sometimes followed by a `Transpose`). The float weight a converted model needs is exactly what
that sub-graph computes, so we evaluate it the way ONNX Runtime does (float32, one operation at
a time, no fused multiply-add) instead of re-deriving the quantisation scheme. Only the few
element-wise ops such chains use are evaluated; everything else is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lora.weight_formats.ort_reader import NUMPY_DTYPES, OrtGraph, OrtNode


def _cast(node: OrtNode, x: np.ndarray) -> np.ndarray:
    return x.astype(np.dtype(NUMPY_DTYPES[node.attributes["to"]]).newbyteorder("="))


def _dequantize_linear(node: OrtNode, x: np.ndarray, scale: np.ndarray, zero=None) -> np.ndarray:
    """ONNX DequantizeLinear: (x - zero_point) * scale, per tensor or along `axis`."""
    axis = node.attributes.get("axis", 1)
    shift = np.zeros_like(scale, dtype=np.int32) if zero is None else zero.astype(np.int32)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = scale.size
        scale, shift = scale.reshape(shape), shift.reshape(shape)
    return ((x.astype(np.int32) - shift).astype(np.float32) * scale).astype(scale.dtype)


def _transpose(node: OrtNode, x: np.ndarray) -> np.ndarray:
    perm = node.attributes.get("perm")
    return np.ascontiguousarray(np.transpose(x, perm))


# op_type -> evaluator(node, *inputs). Binary ops keep ONNX (numpy) broadcasting and the dtype
# of their inputs, so float32 * float32 rounds once per op, as in ONNX Runtime.
FOLDABLE: dict[str, Callable[..., np.ndarray]] = {
    "Cast": _cast,
    "Mul": lambda node, a, b: np.multiply(a, b),
    "Add": lambda node, a, b: np.add(a, b),
    "Sub": lambda node, a, b: np.subtract(a, b),
    "DequantizeLinear": _dequantize_linear,
    "Transpose": _transpose,
    "Identity": lambda node, x: x,
}


@dataclass(frozen=True)
class Scope:
    """What the nodes of one graph can see: constants (own + enclosing scopes, folded) and producers.

    Scopes matter: sibling `If` branches may reuse a name (one as an empty initializer, the other
    as a computed tensor), so names are resolved per graph, never in one global table.
    """

    graph: OrtGraph
    constants: dict[str, np.ndarray]
    producers: dict[str, str]  # tensor name -> name of the node that computes it


def fold_scopes(graph: OrtGraph, outer: Scope | None = None) -> list[Scope]:
    """The scope of `graph` and of every nested subgraph, each with its dequantisation chains folded."""
    own_outputs = {out for node in graph.nodes for out in node.outputs}
    constants = {k: v for k, v in (outer.constants if outer else {}).items() if k not in own_outputs}
    constants.update(graph.initializers)
    _fold_nodes(graph.nodes, constants)
    producers = dict(outer.producers) if outer else {}
    producers.update({out: node.name for node in graph.nodes for out in node.outputs})
    scope = Scope(graph, constants, producers)
    scopes = [scope]
    for node in graph.nodes:
        for sub in node.subgraphs():
            scopes.extend(fold_scopes(sub, scope))
    return scopes


def _fold_nodes(nodes: tuple[OrtNode, ...], values: dict[str, np.ndarray]) -> None:
    """Evaluate foldable nodes whose inputs are all known, until nothing new can be evaluated.

    Repeating until no progress makes the result independent of node order in the file.
    """
    pending = [node for node in nodes if node.op_type in FOLDABLE and node.domain in ("", "ai.onnx")]
    progress = True
    while pending and progress:
        progress = False
        remaining = []
        for node in pending:
            if all(name == "" or name in values for name in node.inputs):
                args = [values[name] if name else None for name in node.inputs]
                values[node.outputs[0]] = FOLDABLE[node.op_type](node, *args)
                progress = True
            else:
                remaining.append(node)
        pending = remaining
