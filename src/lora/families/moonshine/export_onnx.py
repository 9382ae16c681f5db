"""Moonshine (LoRA merged) -> two ONNX graphs for onnxruntime: encoder, and a KV-cached decoder step.

Why not `optimum`: optimum-onnx (the package that carries optimum's ONNX exporters) requires
transformers < 4.58, and this project runs transformers 5; so the graphs are traced here with
`torch.onnx.export` (TorchScript exporter; the dynamo exporter needs onnxscript, not installed).

Why these two graphs: greedy decoding re-running the whole prefix every step costs O(n^2); the
packaged original caches keys/values, so an honest speed comparison needs a cache too.
  encoder.onnx   input_values [B, samples] -> cross_key.i, cross_value.i [B, H, frames, D] for
                 every decoder layer (the cross-attention keys/values depend only on the audio,
                 so they are computed once here instead of at every decoder step)
  decoder.onnx   input_ids [B, 1], past_key.i / past_value.i [B, H, t, D] (t may be 0), the cross
                 keys/values -> logits [B, 1, V], present_key.i / present_value.i [B, H, t+1, D]
The decoder step is written out with the model's own sub-modules (norms, projections, MLP, rotary
embedding), one token at a time, so no causal mask is needed; parity with the PyTorch model's
greedy tokens is checked by the tests and by every export's report.
"""

from __future__ import annotations

from pathlib import Path

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
OPSET = 17


def cross_names(layers: int) -> list[str]:
    return [f"cross_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]


def past_names(layers: int) -> list[str]:
    return [f"past_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]


def _torch_modules():
    """The wrapper modules, built lazily so importing this file does not import torch."""
    import torch

    def heads(x, attn):
        """[B, T, H*D] -> [B, H, T, D]"""
        return x.view(x.shape[0], x.shape[1], -1, attn.head_dim).transpose(1, 2)

    def rotary(x, cos, sin):
        """Moonshine's partial, interleaved rotary embedding (transformers' `apply_rotary_pos_emb`),
        written with stack/flatten instead of `repeat_interleave`, which the exporter mis-ranks."""
        half_cos, half_sin = cos[..., : cos.shape[-1] // 2], sin[..., : sin.shape[-1] // 2]
        cos = torch.stack([half_cos, half_cos], dim=-1).flatten(-2).unsqueeze(1)
        sin = torch.stack([half_sin, half_sin], dim=-1).flatten(-2).unsqueeze(1)
        width = cos.shape[-1]
        rot, rest = x[..., :width], x[..., width:]
        turned = torch.stack([-rot[..., 1::2], rot[..., 0::2]], dim=-1).flatten(-2)
        return torch.cat([rot * cos + turned * sin, rest], dim=-1)

    def attend(q, k, v, attn):
        weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * attn.scaling, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2)
        return attn.o_proj(out.reshape(out.shape[0], out.shape[1], -1))

    class Encoder(torch.nn.Module):
        """Audio -> the decoder's cross-attention keys/values (MoonshineEncoder.forward, unmasked)."""

        def __init__(self, model):
            super().__init__()
            self.encoder = model.model.encoder
            self.decoder_layers = model.model.decoder.layers

        def forward(self, input_values):
            enc = self.encoder
            x = enc.groupnorm(torch.tanh(enc.conv1(input_values.unsqueeze(1))))
            x = torch.nn.functional.gelu(enc.conv3(torch.nn.functional.gelu(enc.conv2(x))))
            hidden = x.permute(0, 2, 1)
            positions = torch.arange(hidden.shape[1], dtype=torch.long).unsqueeze(0)
            cos, sin = enc.rotary_emb(hidden, positions)
            for layer in enc.layers:
                attn = layer.self_attn
                x = layer.input_layernorm(hidden)
                q, k = rotary(heads(attn.q_proj(x), attn), cos, sin), rotary(heads(attn.k_proj(x), attn), cos, sin)
                hidden = hidden + attend(q, k, heads(attn.v_proj(x), attn), attn)
                hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            hidden = enc.layer_norm(hidden)
            out = []
            for layer in self.decoder_layers:
                attn = layer.encoder_attn
                out += [heads(attn.k_proj(hidden), attn), heads(attn.v_proj(hidden), attn)]
            return tuple(out)

    class DecoderStep(torch.nn.Module):
        """One token in, next-token logits and the grown self-attention cache out."""

        def __init__(self, model):
            super().__init__()
            self.decoder = model.model.decoder
            self.proj_out = model.proj_out

        def forward(self, input_ids, *caches):
            n = len(self.decoder.layers)
            past, cross = caches[: 2 * n], caches[2 * n:]
            hidden = self.decoder.embed_tokens(input_ids)
            start = past[0].shape[2]
            positions = torch.arange(start, start + input_ids.shape[1], dtype=torch.long).unsqueeze(0)
            cos, sin = self.decoder.rotary_emb(hidden, positions)
            present = []
            for i, layer in enumerate(self.decoder.layers):
                attn = layer.self_attn
                x = layer.input_layernorm(hidden)
                q, k = rotary(heads(attn.q_proj(x), attn), cos, sin), rotary(heads(attn.k_proj(x), attn), cos, sin)
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], heads(attn.v_proj(x), attn)], dim=2)
                present += [k, v]
                hidden = hidden + attend(q, k, v, attn)
                cross_attn = layer.encoder_attn
                x = layer.post_attention_layernorm(hidden)
                hidden = hidden + attend(heads(cross_attn.q_proj(x), cross_attn), cross[2 * i], cross[2 * i + 1], cross_attn)
                hidden = hidden + layer.mlp(layer.final_layernorm(hidden))
            logits = self.proj_out(self.decoder.norm(hidden))
            return (logits, *present)

    return Encoder, DecoderStep


def export_moonshine_onnx(model, out_dir: Path) -> list[Path]:
    """Write `encoder.onnx` and `decoder.onnx` for a (merged, eval-mode, float32) Moonshine model."""
    import torch

    Encoder, DecoderStep = _torch_modules()
    config = model.config
    layers, heads = config.decoder_num_hidden_layers, config.decoder_num_key_value_heads
    head_dim = config.hidden_size // config.decoder_num_attention_heads
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    audio = torch.zeros(1, 16000 * 2)
    with torch.no_grad():
        cross = Encoder(model)(audio)
        torch.onnx.export(
            Encoder(model), (audio,), str(out_dir / ENCODER_FILE), dynamo=False, opset_version=OPSET,
            input_names=["input_values"], output_names=cross_names(layers),
            dynamic_axes={"input_values": {0: "batch", 1: "samples"}} | {n: {0: "batch", 2: "frames"} for n in cross_names(layers)},
        )
        past = tuple(torch.zeros(1, heads, 3, head_dim) for _ in range(2 * layers))
        ids = torch.ones(1, 1, dtype=torch.long)
        torch.onnx.export(
            DecoderStep(model), (ids, *past, *cross), str(out_dir / DECODER_FILE), dynamo=False, opset_version=OPSET,
            input_names=["input_ids", *past_names(layers), *cross_names(layers)],
            output_names=["logits", *present_names(layers)],
            dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}}
            | {n: {0: "batch", 2: "past"} for n in past_names(layers)}
            | {n: {0: "batch", 2: "frames"} for n in cross_names(layers)}
            | {n: {0: "batch", 2: "total"} for n in present_names(layers)},
        )
    return [out_dir / ENCODER_FILE, out_dir / DECODER_FILE]
