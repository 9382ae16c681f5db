"""Map the weights of the Moonshine ORT graphs onto `MoonshineForConditionalGeneration` keys.

Why by consumer node: in the quantised export most weights lost their names (`onnx::MatMul_2771_
merged_0_quantized`, unnamed group-norm tensors), but the node that *uses* each weight still
carries the PyTorch module path (`/model/decoder/layers.0/self_attn/q_proj/MatMul`). So a weight
is found as the constant input of a MatMul / Conv / Gather / Mul / Add node, and its key follows
from that node's name. The graphs come from an older export, so a few module names differ from
today's transformers (`dense` -> `o_proj`, decoder `up_proj`/`down_proj` -> `fc1`/`fc2`).
"""

from __future__ import annotations

import numpy as np

from lora.core.errors import UserError
from lora.weight_formats.ort_fold import fold_scopes
from lora.weight_formats.ort_reader import OrtModel, OrtNode

# Export-time module names -> transformers module names.
RENAMES = {"dense": "o_proj", "up_proj": "fc1", "down_proj": "fc2"}
NORM_SUFFIXES = ("norm", "layernorm", "layer_norm")
LINEAR_SUFFIXES = ("proj", "fc1", "fc2", "proj_out")


def module_path(node_name: str, part: str) -> tuple[str, str] | None:
    """`/model/decoder/layers.0/self_attn/dense/MatMul` -> ('layers.0.self_attn.o_proj', 'MatMul')."""
    pieces = [p for p in node_name.split("/") if p]
    if len(pieces) < 2:
        return None
    if pieces[:2] == ["model", part]:
        pieces = pieces[2:]
    elif pieces[0] == part:
        pieces = pieces[1:]
    op = pieces[-1].split("_")[0]  # "Add_1" -> "Add"
    modules = [RENAMES.get(p, p) for p in pieces[:-1]]
    return (".".join(modules), op) if modules else None


def hf_key(module: str, param: str, part: str) -> str:
    """Full state-dict key; the output projection sits outside `model.<part>`."""
    if module == "proj_out":
        return f"proj_out.{param}"
    return f"model.{part}.{module}.{param}"


def _is_norm(module: str) -> bool:
    return module.split(".")[-1].endswith(NORM_SUFFIXES)


def _is_linear(module: str) -> bool:
    return module.split(".")[-1].endswith(LINEAR_SUFFIXES)


def node_params(node: OrtNode, part: str, consts: dict, producers: dict) -> list[tuple[str, np.ndarray]]:
    """The (key, array) parameters node `node` consumes; [] for nodes that hold none."""
    found = module_path(node.name, part)
    if found is None:
        return []
    module, op = found
    ins = node.inputs
    if op == "MatMul" and len(ins) == 2 and ins[1] in consts and ins[0] not in consts:
        return [(hf_key(module, "weight", part), consts[ins[1]].T)]  # x @ W  ==  Linear(W.T)
    if op == "Conv" and ins[1] in consts:
        params = [(hf_key(module, "weight", part), consts[ins[1]])]
        if len(ins) > 2 and ins[2] in consts:
            params.append((hf_key(module, "bias", part), consts[ins[2]]))
        return params
    if op == "Gather" and module.endswith("embed_tokens") and ins[0] in consts:
        return [(hf_key(module, "weight", part), consts[ins[0]])]
    if op not in ("Mul", "Add") or len(ins) != 2:
        return []
    const = [name for name in ins if name in consts]
    other = [name for name in ins if name not in consts]
    if len(const) != 1 or len(other) != 1:
        return []
    source = producers.get(other[0], "")
    source_path = module_path(source, part) if source else None
    same_module = source_path is not None and source_path[0] == module
    # LayerNorm: .../Div -> Mul(weight); the group norm: .../Reshape_1 -> Mul(weight) -> Add(bias).
    if op == "Mul" and _is_norm(module) and same_module and source_path[1] in ("Div", "Reshape"):
        return [(hf_key(module, "weight", part), consts[const[0]].reshape(-1))]
    if op == "Add" and same_module and (
        (_is_linear(module) and source_path[1] == "MatMul") or (_is_norm(module) and source_path[1] == "Mul")
    ):
        return [(hf_key(module, "bias", part), consts[const[0]].reshape(-1))]
    return []


def graph_state_dict(model: OrtModel, part: str) -> dict[str, np.ndarray]:
    """All parameters one graph (`part` = "encoder" or "decoder") holds, as float32 arrays.

    A weight used in both `If` branches must be identical in both; a conflict is an error.
    """
    state: dict[str, np.ndarray] = {}
    for scope in fold_scopes(model.graph):
        for node in scope.graph.nodes:
            for key, value in node_params(node, part, scope.constants, scope.producers):
                value = np.ascontiguousarray(value, dtype=np.float32)
                if key in state and not np.array_equal(state[key], value):
                    raise UserError(f"{model.path}: parameter {key} differs between graph branches")
                state[key] = value
    return state
