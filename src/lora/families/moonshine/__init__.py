"""Moonshine: the family (features, labels, padding, caps), its importer from the `moonshine-cpp`
ORT graphs, the reference runtime on those graphs, and the ONNX exporter with its runtime.

    family.py        features, labels, padding, generation cap
    importer.py      moonshine-cpp ORT graphs -> transformers directory (with weights.py)
    reference.py     the packaged graphs run by onnxruntime (parity and speed reference)
    export_onnx.py   merged model -> encoder.onnx + KV-cached decoder.onnx
    onnx_runtime.py  greedy decoding on the exported graphs
    exports.py       the export format's callables
    conv_stem.py     the first convolution as one GEMM (a GPU bench A/B, not a default)
    clip_lengths.py  each clip of a padded batch encoded as if alone (GroupNorm and mask over its own frames)
"""

from lora.families.base import ExportFormat, ImportSpec
from lora.families.moonshine.family import MOONSHINE

FAMILY = MOONSHINE
IMPORTS = (
    ImportSpec("moonshine-base-en", "moonshine", "lora.families.moonshine.importer", "moonshine-cpp",
               "Moonshine base (English) from the `moonshine-cpp` ORT graphs, dequantised int8 -> fp32"),
)
EXPORTS = (
    ExportFormat("onnx", "moonshine", "onnxruntime", "moonshine-cpp's packaged .ort graphs (OrtMoonshine)",
                 "lora.families.moonshine.exports:export_onnx", "lora.families.moonshine.exports:open_onnx",
                 "lora.families.moonshine.exports:open_original"),
)
