"""README.md model cards for adapters and merged models, from a run's metrics record.

`build_model_card(info)` takes the run record (`real_metrics.json`, or the smaller `lora_run.json`
plus whatever metrics are known) and returns a `huggingface_hub.ModelCard`: YAML metadata
(`library_name: peft`, or `transformers` for a merged model; `base_model` as a portable hub id, tags, `pipeline_tag`) and a body with
the base model, the data, before/after WER with its 95% interval and verdict, the canary
(forgetting) check, the command line and the library versions. A value the record lacks is
printed as "not recorded": never a guess. `write_model_card(dir, info)` writes `dir/README.md`
atomically.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lora.core.outputs import write_text_atomic

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

CARD_FILE = "README.md"
NOT_RECORDED = "not recorded"
PIPELINE_TAG = "automatic-speech-recognition"
BASE_TAGS = ("lora", PIPELINE_TAG)
# import names (lora.importing) -> the hub model they are converted from: the id anyone can load
PORTABLE_IDS = {
    "moonshine-base-en": "UsefulSensors/moonshine-base",
    "whisper-tiny.en": "openai/whisper-tiny.en",
}


def portable_base_id(info: Mapping) -> str | None:
    """The hub id of the base model, or None when it is a local folder with no known origin."""
    used = info.get("model_id_used") or info.get("base_model")
    if not used:
        return None
    if used in PORTABLE_IDS:
        return PORTABLE_IDS[used]
    source = info.get("model_source")
    if source == "hub" or (source is None and _looks_like_hub_id(used)):
        return used
    imported = info.get("import_name")
    return PORTABLE_IDS.get(imported) if imported else None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def fmt_pct(value) -> str:
    return NOT_RECORDED if value is None else f"{100 * float(value):.1f}%"


def fmt_interval(ci) -> str:
    if not ci or len(ci) != 2 or None in ci:
        return NOT_RECORDED
    return f"[{100 * float(ci[0]):.1f}%, {100 * float(ci[1]):.1f}%]"


def fmt_signed_pct(value) -> str:
    return NOT_RECORDED if value is None else f"{100 * float(value):+.1f} points"


def command_line(info: Mapping) -> str:
    command = info.get("command") or info.get("argv")
    if not command:
        return NOT_RECORDED
    return command if isinstance(command, str) else shlex.join(str(c) for c in command)


def _count(value) -> str:
    if value is None:
        return NOT_RECORDED
    return str(len(value)) if isinstance(value, Sequence) and not isinstance(value, str) else str(value)


def card_metadata(info: Mapping) -> ModelCardData:
    # deferred: importing huggingface_hub's card module costs ~0.7 s; --help must stay fast
    from huggingface_hub import ModelCardData

    family = info.get("family")
    tags = [*BASE_TAGS, *([family] if family else [])]
    base = portable_base_id(info)
    # an adapter needs PEFT to load; a merged folder is a plain transformers model
    library = "transformers" if info.get("merged") else "peft"
    return ModelCardData(library_name=library, base_model=base, tags=tags, pipeline_tag=PIPELINE_TAG,
                         language=info.get("language") or "en")


def card_body(info: Mapping) -> str:
    config = info.get("config") or {}
    used = info.get("model_id_used") or info.get("base_model") or NOT_RECORDED
    base = portable_base_id(info)
    delta = info.get("wer_delta_ci95") or {}
    canary = info.get("canary") or {}
    title = info.get("title") or f"LoRA adapter for {base or used}"
    lines = [
        f"# {title}", "",
        "LoRA fine-tune made with the `lora` toolkit"
        + (" and merged into the base weights (a plain transformers model)." if info.get("merged") else
           " (a PEFT adapter: load it on top of the base model)."), "",
        "## Base model", "",
        f"- model: `{used}` ({info.get('model_source') or NOT_RECORDED})"
        + (f", portable id `{base}`" if base and base != used else ""),
        f"- family: {info.get('family') or NOT_RECORDED}",
        f"- LoRA: r={config.get('lora_r', NOT_RECORDED)}, alpha={config.get('lora_alpha', NOT_RECORDED)}, "
        f"dropout={config.get('lora_dropout', NOT_RECORDED)}, targets: "
        + (", ".join(f"`{t}`" for t in info["target_modules"]) if info.get("target_modules") else NOT_RECORDED), "",
        "## Data", "",
        f"- source: {_data_source(info.get('data_source'))}",
        f"- training: {_count(info.get('train_ids'))} utterances from {_count(info.get('train_speakers'))} speakers",
        f"- evaluation: {_count(info.get('eval_ids'))} utterances from {_count(info.get('eval_speakers'))} speakers"
        + (" (speaker-disjoint from training)" if _disjoint(info) else ""),
        "",
        "## Word error rate (held-out evaluation)" if not _shared(info) else
        "## Word error rate (held-out utterances of the training speakers, not speaker-disjoint)", "",
        "| | WER | 95% interval |", "|---|---|---|",
        f"| before (base model) | {fmt_pct(info.get('baseline_wer'))} | {fmt_interval(info.get('baseline_wer_ci95'))} |",
        f"| after (with LoRA) | {fmt_pct(info.get('tuned_wer'))} | {fmt_interval(info.get('tuned_wer_ci95'))} |",
        f"| change | {fmt_signed_pct(delta.get('delta'))} | {fmt_interval(delta.get('ci95'))} |", "",
        f"Verdict: **{delta.get('verdict') or NOT_RECORDED}** (paired bootstrap over utterances"
        + (f", {delta['resamples']} resamples" if delta.get("resamples") else "") + ").", "",
        "## Canary (forgetting check)", "",
    ]
    if canary.get("utterances"):
        cdelta = canary.get("wer_delta_ci95") or {}
        lines += [
            (f"General speech the adapter was not trained on ({canary.get('source') or NOT_RECORDED}, "
            f"{canary['utterances']} utterances):"), "",
            f"- WER before: {fmt_pct(canary.get('wer_before'))}, after: {fmt_pct(canary.get('wer_after'))}",
            (f"- change: {fmt_signed_pct(cdelta.get('delta'))}, 95% interval {fmt_interval(cdelta.get('ci95'))}, "
            f"verdict: **{cdelta.get('verdict') or NOT_RECORDED}**"),
        ]
    else:
        lines.append(f"No canary set was scored ({canary.get('source') or NOT_RECORDED}).")
    terms = info.get("terms") or {}
    if terms.get("said"):
        tdelta = terms.get("term_error_rate_change_ci95") or {}
        lines += ["", "## Your terms (held-out evaluation)", "",
                  f"{terms['said']} occurrences of {terms['terms']} terms from `{terms.get('terms_file')}` in the eval set:", "",
                  f"- written where said: {fmt_pct(terms.get('recall_before'))} before, {fmt_pct(terms.get('recall_after'))} after",
                  f"- written where not said: {terms.get('inserted_before')} before, {terms.get('inserted_after')} after",
                  (f"- term error rate change: {fmt_signed_pct(tdelta.get('delta'))}, 95% interval "
                   f"{fmt_interval(tdelta.get('ci95'))}, verdict: **{tdelta.get('verdict') or NOT_RECORDED}**")]
    lines += ["", "## How it was made", "", "```", command_line(info), "```", "", "Library versions:", ""]
    versions = info.get("versions") or {}
    lines += [f"- {name}: {version}" for name, version in versions.items() if version] or [f"- {NOT_RECORDED}"]
    return "\n".join(lines) + "\n"


def _disjoint(info: Mapping) -> bool:
    train, held = info.get("train_speakers"), info.get("eval_speakers")
    return bool(train and held and isinstance(train, list | tuple) and not set(train) & set(held))


def _shared(info: Mapping) -> bool:
    """Did the eval share speakers with training (`--allow-shared-speakers`, e.g. one speaker's data)?"""
    train, held = info.get("train_speakers"), info.get("eval_speakers")
    return isinstance(train, list | tuple) and isinstance(held, list | tuple) and bool(set(train) & set(held))


def _data_source(source) -> str:
    """A run's `data_source` ({"kind", "where", ...} in real_metrics.json) as `where (kind)`; a string as it is."""
    if isinstance(source, Mapping):
        return f"{source.get('where') or NOT_RECORDED} ({source.get('kind') or NOT_RECORDED})"
    return str(source) if source else NOT_RECORDED


def build_model_card(info: Mapping) -> ModelCard:
    """The model card (metadata + body) for a run record."""
    from huggingface_hub import ModelCard  # deferred: see card_metadata

    return ModelCard(f"---\n{card_metadata(info).to_yaml()}\n---\n\n{card_body(info)}")


def write_model_card(directory: str | Path, info: Mapping) -> Path:
    """Write `directory/README.md` atomically; returns its path."""
    return write_text_atomic(Path(directory) / CARD_FILE, str(build_model_card(info)))
