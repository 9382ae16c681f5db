"""The Moonshine `tokenizer.bin` vocabulary, and the fast BPE tokenizer rebuilt from it.

`tokenizer.bin` (from `moonshine-cpp`) is the Llama-2 SentencePiece vocabulary stripped to one
length-prefixed byte record per token id: a length byte 1..127, or two bytes
`first + 128 * second - 128` for longer records, or 0 for an empty record; byte tokens are stored
as the raw byte. It has no scores and no merges, but Llama's SentencePiece model is BPE whose
piece order *is* its merge order, so the merges follow from the vocabulary: every split of a
piece into two known pieces is a merge, ranked by the piece's id, except the whitespace-only
pieces ("▁▁", "▁▁▁▁", ...) whose SentencePiece score is minimal, so their merges come last.
With byte fallback for characters outside the vocabulary this is the upstream fast tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from lora.core.errors import UserError

SPACE = "\u2581"  # "▁", SentencePiece's visible space
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIAL_IDS = {0: UNK, 1: BOS, 2: EOS}
BYTE_BASE = 3  # ids 3..258 are the byte-fallback tokens <0x00>..<0xFF>
# Moonshine's vocab is padded to 32768; the padding ids are named like upstream's special tokens.
MODEL_VOCAB_SIZE = 32768
PAD_TOKEN_NAME = "<<ST_{}>>"


def read_records(path: Path) -> list[bytes]:
    """The raw byte record of every token id, in id order."""
    data = Path(path).read_bytes()
    records, pos = [], 0
    while pos < len(data):
        size = data[pos]
        pos += 1
        if size >= 128:
            if pos >= len(data):
                raise UserError(f"{path}: truncated length at byte {pos - 1} (record {len(records)})")
            size = size - 128 + 128 * data[pos]
            pos += 1
        if pos + size > len(data):
            raise UserError(f"{path}: record {len(records)} runs past the end of the file (truncated?)")
        records.append(data[pos : pos + size])
        pos += size
    return records


def piece_strings(records: list[bytes]) -> list[str]:
    """SentencePiece piece names: specials as text, byte tokens as `<0xAB>`, others as UTF-8."""
    pieces = []
    for index, record in enumerate(records):
        if index in SPECIAL_IDS:
            pieces.append(SPECIAL_IDS[index])
        elif BYTE_BASE <= index < BYTE_BASE + 256 and record == bytes([index - BYTE_BASE]):
            pieces.append(f"<0x{index - BYTE_BASE:02X}>")
        else:
            try:
                pieces.append(record.decode("utf-8"))
            except UnicodeDecodeError:
                raise UserError(f"token {index} is not valid UTF-8 ({record!r})") from None
    if len(set(pieces)) != len(pieces):
        raise UserError("tokenizer vocabulary has duplicate pieces")
    return pieces


def is_space_only(piece: str) -> bool:
    return bool(piece) and set(piece) == {SPACE}


def derive_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges in priority order from a SentencePiece-BPE vocabulary in merge order."""
    ranked = []
    for piece, pid in vocab.items():
        if pid < BYTE_BASE + 256 or len(piece) < 2:
            continue
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        splits = [(a, b) for a, b in splits if a in vocab and b in vocab]
        splits.sort(key=lambda ab: (vocab[ab[0]], vocab[ab[1]]))
        rank = (is_space_only(piece), pid)
        ranked.extend((rank, a, b) for a, b in splits)
    ranked.sort(key=lambda item: item[0])
    return [(a, b) for _, a, b in ranked]


def build_tokenizer(pieces: list[str]):
    """A `tokenizers.Tokenizer` equivalent to Llama's SentencePiece BPE (legacy, dummy prefix)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    vocab = {piece: index for index, piece in enumerate(pieces)}
    model = BPE(vocab=vocab, merges=derive_merges(vocab), unk_token=UNK, fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
    )
    specials = [AddedToken(name, special=True, normalized=False) for name in SPECIAL_IDS.values()]
    specials += [AddedToken(PAD_TOKEN_NAME.format(i), special=True, normalized=False)
                 for i in range(MODEL_VOCAB_SIZE - len(pieces))]
    tok.add_special_tokens(specials)
    return tok


def package_decode(records: list[bytes], ids: list[int]) -> str:
    """Decode ids the way the package's C++ `BinTokenizer` does: join byte records, "▁" -> " ".

    Special ids (0..2) and padding ids are skipped; the single leading space is dropped.
    """
    joined = b"".join(records[i] for i in ids if i not in SPECIAL_IDS and 0 <= i < len(records))
    text = joined.decode("utf-8", errors="replace").replace(SPACE, " ")
    return text.removeprefix(" ")


def sentencepiece_proto(pieces: list[str]) -> bytes:
    """A SentencePiece BPE model over the same pieces, scored by vocabulary order.

    Why: an independent encoder to check the rebuilt fast tokenizer against. The `sentencepiece`
    library runs the algorithm the model was trained with; only the scores are inferred (piece
    order, whitespace-only pieces lowest), the same assumption the derived merges rest on.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    spec = proto.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, len(pieces), True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = proto.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = (
        "identity", True, False, True,
    )
    kinds = pb.ModelProto.SentencePiece
    for index, piece in enumerate(pieces):
        entry = proto.pieces.add()
        entry.piece = piece
        if index == 0:
            entry.type = kinds.UNKNOWN
        elif index in SPECIAL_IDS:
            entry.type = kinds.CONTROL
        elif index < BYTE_BASE + 256:
            entry.type = kinds.BYTE
        else:
            entry.type = kinds.NORMAL
            entry.score = -1e9 if is_space_only(piece) else -float(index)
    return proto.SerializeToString()
