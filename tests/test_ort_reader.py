"""The `.ort` reader and constant folder on tiny models the tests build and convert themselves.

Each model is written with `onnx.helper`, converted to ORT format by onnxruntime itself (graph
optimisation off, so the int8 dequantisation chains survive as in the Moonshine export), then read
back. Folded weights are compared bit-for-bit with what onnxruntime computes for the same chain.
"""

from __future__ import annotations

import numpy as np
import pytest

from lora.core.errors import UserError
from lora.weight_formats.ort_fold import fold_scopes
from lora.weight_formats.ort_reader import OrtGraph, OrtNode, parse_ort_bytes, read_ort_model

RNG = np.random.default_rng(0)
INITS = {
    "w_q": RNG.integers(-128, 128, size=(3, 4), dtype=np.int8),
    "w_scale": np.array([0.0123], dtype=np.float32),
    "w_offset": np.array([-0.004], dtype=np.float32),
    "d_q": RNG.integers(0, 256, size=(4, 2), dtype=np.uint8),
    "d_scale": np.array(0.05, dtype=np.float32),
    "d_zero": np.array(128, dtype=np.uint8),
    "half": RNG.standard_normal((2, 2)).astype(np.float16),
    "shape": np.array([2, 2], dtype=np.int64),
    "flag": np.array([True]),
}
THEN_CONST = np.array([[1.5, -2.0]], dtype=np.float32)


def _tiny_model():
    """x[2,3] @ dequant(w) -> Transpose; DequantizeLinear weight; an If with its own initializer."""
    from onnx import TensorProto, helper, numpy_helper

    h = helper
    then_graph = h.make_graph(
        [h.make_node("Add", ["y", "then_const"], ["branch_out"], name="/branch/then/Add")],
        "then", [], [h.make_tensor_value_info("branch_out", TensorProto.FLOAT, [2, 2])],
        initializer=[numpy_helper.from_array(THEN_CONST, "then_const")],
    )
    else_graph = h.make_graph(
        [h.make_node("Identity", ["y"], ["branch_out2"], name="/branch/else/Identity")],
        "else", [], [h.make_tensor_value_info("branch_out2", TensorProto.FLOAT, [2, 2])],
    )
    nodes = [
        h.make_node("Cast", ["w_q"], ["w_cast"], name="w_cast_node", to=TensorProto.FLOAT),
        h.make_node("Mul", ["w_cast", "w_scale"], ["w_mul"], name="w_mul_node"),
        h.make_node("Add", ["w_mul", "w_offset"], ["w_deq"], name="w_add_node"),
        h.make_node("Transpose", ["w_deq"], ["w_t"], name="w_transpose", perm=[1, 0]),
        h.make_node("DequantizeLinear", ["d_q", "d_scale", "d_zero"], ["d_deq"], name="d_node"),
        h.make_node("MatMul", ["x", "w_deq"], ["xw"], name="/layers.0/q_proj/MatMul"),
        h.make_node("MatMul", ["xw", "d_deq"], ["y"], name="/layers.0/out/MatMul"),
        h.make_node("Cast", ["half"], ["half_f"], name="half_cast", to=TensorProto.FLOAT),
        h.make_node("Reshape", ["half_f", "shape"], ["half_r"], name="reshape"),
        h.make_node("And", ["cond", "flag"], ["cond_and"], name="and"),
        h.make_node("If", ["cond_and"], ["branch"], name="the_if", then_branch=then_graph, else_branch=else_graph),
    ]
    graph = h.make_graph(
        nodes, "tiny",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]), h.make_tensor_value_info("cond", TensorProto.BOOL, [1])],
        [h.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("branch", "w_deq", "w_t", "d_deq", "half_r")],
        initializer=[numpy_helper.from_array(value, name) for name, value in INITS.items()],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def tiny_ort(tmp_path_factory):
    """(path of the .ort file, onnxruntime outputs for cond=True) of the tiny model."""
    import onnx
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("ort")
    onnx_path, ort_path = folder / "tiny.onnx", folder / "tiny.ort"
    onnx.save(_tiny_model(), onnx_path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((2, 3), np.float32), "cond": np.array([True])}
    names = [o.name for o in session.get_outputs()]
    return ort_path, dict(zip(names, session.run(names, feeds)))


def test_initializers_keep_values_and_dtypes(tiny_ort):
    model = read_ort_model(tiny_ort[0])
    for name, expected in INITS.items():
        got = model.graph.initializers[name]
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert model.opsets[""] == 17 and model.ort_version


def test_nodes_attributes_and_if_subgraphs(tiny_ort):
    model = read_ort_model(tiny_ort[0])
    by_name = {node.name: node for node, _ in model.graph.walk()}
    assert by_name["/layers.0/q_proj/MatMul"].inputs == ("x", "w_deq")
    assert by_name["w_cast_node"].attributes["to"] == 1
    assert by_name["w_transpose"].attributes["perm"] == [1, 0]
    if_node = by_name["the_if"]
    assert if_node.op_type == "If" and len(if_node.subgraphs()) == 2
    then_graph = if_node.attributes["then_branch"]
    np.testing.assert_array_equal(then_graph.initializers["then_const"], THEN_CONST)
    depths = {node.name: depth for node, depth in model.graph.walk()}
    assert depths["/branch/then/Add"] == 1 and depths["/branch/else/Identity"] == 1


def test_folded_chains_equal_onnxruntime_bit_for_bit(tiny_ort):
    path, ort_out = tiny_ort
    scopes = fold_scopes(read_ort_model(path).graph)
    consts = scopes[0].constants
    for name in ("w_deq", "w_t", "d_deq"):
        assert consts[name].dtype == np.float32, name
        assert np.array_equal(consts[name], ort_out[name]), name
    then_scope = next(s for s in scopes if "then_const" in s.graph.initializers)
    assert "w_deq" in then_scope.constants  # outer constants are visible inside a branch


def test_scopes_resolve_names_per_branch():
    """A name that is an initializer in one branch and a computed tensor in its sibling stays apart."""
    shared = "present.0.encoder.value"
    then_branch = OrtGraph({shared: np.zeros((0, 2), np.float32)}, (), (), (shared,))
    else_branch = OrtGraph({}, (OrtNode("MatMul", "/mm", "", ("a", "b"), (shared,)),), (), (shared,))
    top = OrtGraph({"a": np.ones(2, np.float32)},
                   (OrtNode("If", "if", "", ("c",), ("o",), {"then_branch": then_branch, "else_branch": else_branch}),),
                   (), ("o",))
    scopes = {id(s.graph): s for s in fold_scopes(top)}
    assert shared in scopes[id(then_branch)].constants
    assert shared not in scopes[id(else_branch)].constants
    assert scopes[id(else_branch)].producers[shared] == "/mm"


@pytest.mark.parametrize("keep", [0, 6, 200, 0.5, 0.9, -1, -4])
def test_truncated_file_is_a_clear_error(tiny_ort, tmp_path, keep):
    """Cut anywhere (a negative `keep` drops that many bytes from the end): a UserError naming the file."""
    data = tiny_ort[0].read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    broken = tmp_path / "broken.ort"
    broken.write_bytes(data[:size])
    with pytest.raises(UserError, match="broken.ort"):
        read_ort_model(broken)


def test_not_an_ort_file_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not an ORT-format model"):
        parse_ort_bytes(b"\x00" * 64, "junk.bin")
    with pytest.raises(UserError, match="missing.ort"):
        read_ort_model(tmp_path / "missing.ort")
