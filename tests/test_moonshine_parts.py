"""Fast unit tests of the Moonshine importer's pure parts: weight naming, tokenizer.bin, merges, cap."""

from __future__ import annotations

import pytest

from lora.core.errors import UserError
from lora.families.moonshine.family import MOONSHINE
from lora.families.moonshine.reference import max_new_tokens
from lora.families.moonshine.weights import hf_key, module_path
from lora.weight_formats.spm_vocab import derive_merges, package_decode, piece_strings, read_records


@pytest.mark.parametrize(
    ("node", "part", "expected"),
    [
        ("/model/decoder/layers.3/self_attn/dense/MatMul", "decoder", ("layers.3.self_attn.o_proj", "MatMul")),
        ("/model/decoder/layers.0/mlp/up_proj/Add", "decoder", ("layers.0.mlp.fc1", "Add")),
        ("/model/decoder/layers.7/mlp/down_proj/MatMul", "decoder", ("layers.7.mlp.fc2", "MatMul")),
        ("/layers.2/post_attention_layernorm/Mul", "encoder", ("layers.2.post_attention_layernorm", "Mul")),
        ("/groupnorm/Add_1", "encoder", ("groupnorm", "Add")),
        ("/proj_out/MatMul", "decoder", ("proj_out", "MatMul")),
        ("/Gather", "encoder", None),
    ],
)
def test_module_path_follows_transformers_names(node, part, expected):
    assert module_path(node, part) == expected


def test_hf_keys():
    assert hf_key("layers.0.self_attn.q_proj", "weight", "encoder") == "model.encoder.layers.0.self_attn.q_proj.weight"
    assert hf_key("proj_out", "weight", "decoder") == "proj_out.weight"


def test_tokenizer_bin_records(tmp_path):
    """One-byte lengths, the two-byte form for long records, an empty record; byte tokens by id."""
    long_piece = ("\u2581" + "x" * 200).encode()
    data = b"\x05<unk>\x03<s>\x04</s>" + b"".join(b"\x01" + bytes([i]) for i in range(256))
    data += b"\x00" + bytes([len(long_piece) % 128 + 128, len(long_piece) // 128]) + long_piece
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(data)
    records = read_records(path)
    assert len(records) == 3 + 256 + 2 and records[-2] == b"" and records[-1] == long_piece
    pieces = piece_strings(records)
    assert pieces[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and pieces[258] == "<0xFF>"
    assert package_decode(records, [1, 3 + 0x41, 3 + 0x42, len(records) - 1, 2]) == "AB " + "x" * 200
    path.write_bytes(data[:-10])
    with pytest.raises(UserError, match="tokenizer.bin"):
        read_records(path)


def test_merges_follow_vocab_order_with_space_runs_last():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{i:02X}>": 3 + i for i in range(256)}}
    for piece in ["\u2581\u2581", "\u2581t", "he", "\u2581the", "\u2581", "t", "h", "e"]:
        vocab[piece] = len(vocab)
    merges = derive_merges(vocab)
    assert merges[0] == ("\u2581", "t") and merges[-1] == ("\u2581", "\u2581")
    assert [m for m in merges if "".join(m) == "\u2581the"] == [("\u2581t", "he")]


def test_generation_cap():
    assert max_new_tokens(0) == MOONSHINE.min_new_tokens_cap
    assert max_new_tokens(16000 * 10) == 130
    assert max_new_tokens(16000 * 10 + 1) == 131
