"""Resolve `--model-id`, load base model + processor, attach / save / load LoRA adapters.

`--model-id` accepts a hub id, a local transformers directory, or an import name
(`moonshine-base-en`, `whisper-tiny.en`) that resolves to a cached conversion under `$LORA_HOME`.
`auto` means the seed's hub model when the hub answers, else the imported Moonshine base.
Nothing is substituted silently: the resolution is logged and recorded in every output JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from lora.core.errors import UserError
from lora.core.hub import hub_reachable
from lora.core.outputs import replace_dir, writing
from lora.families import family_for
from lora.importing import cached_import, imports, is_import_name
from lora.model_card import write_model_card

log = logging.getLogger("lora")

AUTO = "auto"
AUTO_HUB_ID = "UsefulSensors/moonshine-tiny"
AUTO_OFFLINE = "moonshine-base-en"
RUN_INFO_FILE = "lora_run.json"  # written beside the PEFT adapter files


@dataclass(frozen=True)
class ResolvedModel:
    model_id_requested: str
    model_id_used: str
    model_source: str  # "hub" | "local" | "import"
    path: str  # what from_pretrained receives (hub id or directory)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "path"} | {"model_path": self.path}


def offline_choices() -> str:
    names = ", ".join(f"--model-id {n}" for n in imports())
    return f"offline choices: {names}, or --model-id /path/to/a/transformers/directory"


def resolve_model_id(model_id: str) -> ResolvedModel:
    """Turn a user's `--model-id` into something `from_pretrained` can load, or a clear error."""
    if not model_id.strip():  # Path("") is the current folder: never load whatever is there
        raise UserError(f"--model-id is empty; {offline_choices()}")
    if model_id == AUTO:
        if hub_reachable():
            resolved = ResolvedModel(AUTO, AUTO_HUB_ID, "hub", AUTO_HUB_ID)
        else:
            log.info("hub unreachable: --model-id auto resolves to the imported %s", AUTO_OFFLINE)
            resolved = ResolvedModel(AUTO, AUTO_OFFLINE, "import", str(cached_import(AUTO_OFFLINE, log.info)))
    elif is_import_name(model_id):
        resolved = ResolvedModel(model_id, model_id, "import", str(cached_import(model_id, log.info)))
    elif Path(model_id).expanduser().is_dir():
        directory = Path(model_id).expanduser().resolve()
        if not (directory / "config.json").is_file():
            raise UserError(f"{directory}: no config.json; not a transformers model directory")
        resolved = ResolvedModel(model_id, str(directory), "local", str(directory))
    elif Path(model_id).expanduser().is_file():
        raise UserError(f"--model-id {model_id}: a file, not a model folder; pass the folder that holds its config.json "
                        f"({offline_choices()})")
    elif _looks_like_hub_id(model_id):
        if not hub_reachable():
            raise UserError(f"cannot reach the Hugging Face hub to fetch {model_id!r}; {offline_choices()}")
        resolved = ResolvedModel(model_id, model_id, "hub", model_id)
    else:
        raise UserError(f"--model-id {model_id!r} is neither a directory, an import name nor a hub id; {offline_choices()}")
    log.info("model: requested %s -> using %s (%s)", resolved.model_id_requested, resolved.model_id_used, resolved.model_source)
    return resolved


def _looks_like_hub_id(model_id: str) -> bool:
    parts = model_id.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not model_id.startswith((".", "/", "~"))


def load_base(resolved: ResolvedModel):
    """(model, processor, family) for a resolved model; float32, eval mode."""
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.utils import logging as hf_logging


    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on every load is noise
    try:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(resolved.path, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(resolved.path)
    except OSError as exc:
        raise UserError(f"could not load model {resolved.model_id_used!r}: {str(exc).splitlines()[0]}; {offline_choices()}") from None
    model.eval()
    family = family_for(model.config.model_type)
    family.prepare_model(model)
    return model, processor, family


def attach_lora(model, r: int, alpha: int, dropout: float, target_modules: tuple[str, ...]):
    """Wrap `model` with fresh LoRA adapters on `target_modules` (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    from lora.lora_dropout import use_fast_mask_dropout  # deferred: imports torch

    # One entry with regex characters (e.g. "decoder.*(q_proj|v_proj)") is a PEFT full-match pattern.
    targets = target_modules[0] if len(target_modules) == 1 and any(c in target_modules[0] for c in "*|()[") else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    model = get_peft_model(model, config)
    use_fast_mask_dropout(model)  # the same dropout, its CPU mask drawn faster (lora.lora_dropout)
    return model


def eager_module(model):
    """`model` without the wrappers training may put around it: DistributedDataParallel's (`module`) and
    `torch.compile`'s (`_orig_mod`, under --compile). Its state-dict names are the model's own, and a
    measurement through it runs eagerly (through the compiled wrapper, evaluation would compile again)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def base_model_view(model):
    """A context in which `model` (a PEFT model, or `torch.compile`'s wrapper of one) computes as its base
    model: PEFT's `disable_adapter`, the same weights without the LoRA update (no second copy of them).
    Used for the baseline after training, the distillation to the base model and `lora evaluate --compare-base`."""
    bare = eager_module(model)
    if not hasattr(bare, "disable_adapter"):
        raise ValueError("the base model's view needs a PEFT model (its LoRA adapters are switched off)")
    return bare.disable_adapter()


# The attention a compiled model trains with: transformers' SDPA attention, registered under its own name by
# `compiled` (with SDPA's mask function) so that plain runs keep transformers' own.
COMPILED_ATTENTION = "lora_sdpa"


def _sdpa_deciding_causal(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    """transformers' SDPA attention (`sdpa_attention_forward`) with `is_causal` decided by Python `if`s.

    Why not transformers' own: it computes `is_causal = q_length > 1 and attention_mask is None and ...`, and
    under `torch.compile(dynamic=True)` the sequence length is symbolic, so that expression can hand SDPA a
    symbolic bool, which SDPA refuses: a graph break in every attention layer, and measured on the CPU (tiny
    Moonshine, 6 steps of length-bucketed batches) a recompilation at every step, 30-40 s each. Here each `if`
    on a symbolic length becomes a guard, and SDPA gets a Python bool: one graph for every batch shape."""
    import torch  # deferred: heavy
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    q_length, kv_length = query.shape[2], key.shape[2]
    unusual = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sinks"))
    if unusual or (causal and attention_mask is None and q_length > 1 and kv_length != q_length):
        # features neither family uses, or a prefill after cached tokens: transformers' own handling
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    flag = False
    if causal and attention_mask is None and q_length > 1:
        flag = True  # the same positions queried and keyed, nothing masked but the future
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                           scale=scaling, is_causal=flag)
    return out.transpose(1, 2).contiguous(), None


# On a CPU, SDPA's bf16 kernels are slower than its float32 ones, forward + backward (aten's flash attention for
# CPU, 2 cores with AMX, 8 heads of 52): 3.5x at 100 positions, 1.4x at 300, even at 900
# (benchmarks/results/cpu_attention_precision.md), and a profile of the bench's Moonshine base LoRA case in bf16
# spent 25% of its CPU time in the attention backward against 12% in float32. So under bf16 autocast on a CPU the
# attention itself runs in float32, between projections that stay bf16 (`lora train` on the 1 h scale manifest:
# 1.23x the audio per second, +120 MB peak RSS for the float32 copies kept for the backward).
FLOAT32_ATTENTION = "lora_sdpa_float32_on_cpu"
FLOAT32_MAX_KEYS = 1024  # longer attention (Whisper's 1,500 encoder frames) gains nothing that pays for the casts


def _sdpa_in_float32(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention computed in float32 on a CPU where it would have run in 16 bits (16-bit inputs,
    or CPU autocast on: it casts SDPA's inputs to bf16, float32 ones too, as Moonshine's rotary embedding makes
    them), with autocast off inside and the output handed back in the dtype SDPA would have returned. Float32
    without autocast, or another device: unchanged."""
    import torch  # deferred: heavy
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    autocast = torch.is_autocast_enabled("cpu")
    if (query.device.type != "cpu" or (query.dtype == torch.float32 and not autocast)
            or key.shape[-2] > FLOAT32_MAX_KEYS):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = torch.get_autocast_dtype("cpu") if autocast else query.dtype
    mask = attention_mask if attention_mask is None or attention_mask.dtype == torch.bool else attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, **kwargs)
    return out.to(dtype), weights


def float32_attention_on_cpu(model) -> bool:
    """Switch a model on SDPA attention to `_sdpa_in_float32` (the same masks, `sdpa_mask`); True when switched.
    For CPU training under bf16 autocast (`lora.training.train_lora`); models on another attention are left alone."""
    bare = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(bare, "config", None), "_attn_implementation", None) != "sdpa":
        return False
    _use_attention(bare, FLOAT32_ATTENTION, _sdpa_in_float32)
    return True


def _use_attention(model, name: str, attention) -> None:
    """Register `attention` under `name` (with SDPA's masks, `sdpa_mask`) and switch `model` (PEFT or bare) to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    bare = model.get_base_model() if hasattr(model, "get_base_model") else model
    bare.set_attn_implementation(name)


def compiled(model, backend: str = "inductor"):
    """`torch.compile` of a (PEFT) model for training, once for every batch shape: lengths and clip counts
    symbolic (`dynamic=True`), attention through `_sdpa_deciding_causal`. Opt-in (`--compile`): its warm-up
    pays only on long GPU runs. `backend="eager"` traces without generating code (tests: graphs and breaks)."""
    import torch  # deferred: heavy

    _use_attention(model, COMPILED_ATTENTION, _sdpa_deciding_causal)
    log.info("--compile: the first step waits for torch.compile (minutes on a CPU)")
    return torch.compile(model, dynamic=True, backend=backend)


# On CUDA, SDPA takes a padding mask only in its memory-efficient kernel, which needs 16-bit head dims in multiples
# of 8 on sm80+ GPUs (aten's sdp_utils: `minimum_gemm_alignment`); any other head dim falls to the math kernel,
# which upcasts to float32 and materialises every score (the flash kernel pads the head dim itself, but takes no
# mask). Moonshine base's heads are 416 / 8 = 52 wide, tiny's 36, and its batches carry a padding mask.
CUDA_HEAD_DIM_MULTIPLE = 8


def pad_attention_heads(model, multiple: int = CUDA_HEAD_DIM_MULTIPLE) -> int:
    """Zero-pad the head dim of every attention layer that supports it (transformers' `pad_head_dim_to_multiple_of`,
    read by Moonshine's layers as `head_dim_padding`) up to a multiple of `multiple`; returns the columns added
    per head (0: already aligned, or no layer supports it). Exact: zero query and key columns add nothing to the
    scores, whose scale stays the unpadded head dim's, and the value's zero columns are sliced off the output.
    Used on CUDA with SDPA attention (`lora.pipeline.load_model`); on a CPU the padding would only add work."""
    added = 0
    for module in model.modules():
        if hasattr(module, "head_dim_padding") and isinstance(getattr(module, "head_dim", None), int):
            module.head_dim_padding = -module.head_dim % multiple
            added = max(added, module.head_dim_padding)
    return added


def attention_head_padding(model) -> int:
    """The zero columns `pad_attention_heads` added to each attention head of `model` (0: none)."""
    return max((m.head_dim_padding for m in model.modules() if isinstance(getattr(m, "head_dim_padding", None), int)), default=0)


@contextlib.contextmanager
def evaluating(model):
    """`model` in eval mode (no dropout) for a measurement inside training, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def portable_base(run_info: dict) -> str | None:
    """What `base_model_name_or_path` in adapter_config.json should say: the import name
    (`moonshine-base-en`) or hub id the run used, never a cache path; a local folder stays its path."""
    used = run_info.get("model_id_used")
    if run_info.get("model_source") in ("import", "hub") and used:
        return used
    return used or None


def save_adapter(model, adapter_dir: Path, run_info: dict, processor=None, card: dict | None = None) -> None:
    """A self-contained adapter folder: PEFT files (safetensors, `base_model_name_or_path` portable),
    our run record, the processor files (tokenizer + feature extractor) when `processor` is given and a
    model card README.md from `card` (a run record; figures it lacks print as "not recorded"), all
    written to a temp dir then renamed into place."""
    adapter_dir = Path(adapter_dir)
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(adapter_dir):
            model.save_pretrained(str(tmp), safe_serialization=True)
            _portable_adapter_config(tmp, portable_base(run_info))
            (tmp / RUN_INFO_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
            if processor is not None:
                processor.save_pretrained(str(tmp))
                getattr(processor, "feature_extractor", processor).save_pretrained(str(tmp))  # preprocessor_config.json too
            if card is not None:
                write_model_card(tmp, card)
        replace_dir(tmp, adapter_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _portable_adapter_config(folder: Path, base: str | None) -> None:
    path = folder / "adapter_config.json"
    if base is None or not path.is_file():
        return
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_processor(processor, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            processor.save_pretrained(str(tmp))
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_run_info(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / RUN_INFO_FILE
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir}: no adapter_config.json; pass the lora_adapter/ folder of a run")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}  # an adapter saved by PEFT alone: no run record to check against
    except (OSError, ValueError) as exc:  # a damaged record would drop the family check and the trained-rows warning, unsaid
        raise UserError(f"{path}: not readable JSON ({str(exc).splitlines()[0]}); the adapter folder is damaged: copy "
                        f"lora_adapter/ again from the run's output folder, or delete {RUN_INFO_FILE} to use the adapter "
                        "without its run record") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object (the run's record); the adapter folder is damaged: copy "
                        f"lora_adapter/ again, or delete {RUN_INFO_FILE} to use the adapter without its run record")
    return info


def load_with_adapter(adapter_dir: Path, model_id: str | None = None):
    """(model with adapter, processor, family, resolved, run_info); base defaults to the one recorded
    (lora_run.json, else adapter_config.json's `base_model_name_or_path`); the processor is the
    adapter folder's own when it holds one."""
    from peft import PeftModel
    from transformers import AutoProcessor

    info = read_run_info(adapter_dir)
    config = read_adapter_config(Path(adapter_dir))
    trained_on = info.get("model_id_used") or info.get("model_id_requested") or config.get("base_model_name_or_path")
    requested = model_id or trained_on
    if not requested:
        raise UserError(f"{adapter_dir}: the adapter records no base model; pass --model-id")
    if not model_id and Path(requested).is_absolute() and not Path(requested).exists():  # trained here, used elsewhere
        raise UserError(f"{adapter_dir}: its base model {requested} (the folder it was trained on) is not on this "
                        "machine; pass --model-id with that model's folder here")
    resolved = resolve_model_id(requested)
    check_adapter_weights(Path(adapter_dir))  # (after the base: an unreachable hub base is the first thing to say)
    model, processor, family = load_base(resolved)
    if (Path(adapter_dir) / "tokenizer_config.json").is_file():
        processor = AutoProcessor.from_pretrained(str(adapter_dir))
    mismatch = _adapter_mismatch(info.get("family"), config, model, family, resolved)
    if mismatch:
        raise UserError(f"{adapter_dir}: {mismatch}; drop --model-id (the adapter's own base is "
                        f"{trained_on or 'not recorded'}), or pass a model it fits")
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (RuntimeError, ValueError) as exc:  # shapes or module names that are not this base's (torch / PEFT say so)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line for line in lines if "mismatch" in line or "not found" in line), lines[0])[:200]
        raise UserError(f"{adapter_dir}: the adapter does not fit {resolved.model_id_used} ({detail}); it was trained on "
                        f"{trained_on or 'a base it does not record'}: drop --model-id, or pass that model") from None
    model.eval()
    return model, processor, family, resolved, info


def read_adapter_config(adapter_dir: Path) -> dict:
    """adapter_config.json, or one line saying the folder is damaged (PEFT would raise from deep inside)."""
    from peft.utils import CONFIG_NAME  # deferred: heavy

    path = adapter_dir / CONFIG_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({str(exc).splitlines()[0]}); the adapter folder is damaged: "
                        "copy lora_adapter/ again from the run's output folder") from None
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a JSON object; the adapter folder is damaged: copy lora_adapter/ again")
    for key, ok, expected in (("r", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number >= 1"),
                              ("lora_alpha", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
                              ("target_modules", lambda v: v is None or isinstance(v, str)
                               or (isinstance(v, list) and all(isinstance(m, str) for m in v)), "module names")):
        if key in document and not ok(document[key]):  # PEFT would fail deep inside (`'<=' not supported ...`)
            raise UserError(f"{path}: {key} is {document[key]!r}, expected {expected}; the adapter folder is damaged: "
                            "copy lora_adapter/ again from the run's output folder")
    return document


def check_adapter_weights(adapter_dir: Path) -> None:
    """Missing or truncated adapter weights, said in one line before PEFT reads them (it would look for the folder
    on the hub, or raise from deep inside). Weights are read from safetensors only (never a pickle)."""
    from peft.utils import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME  # deferred: heavy
    from safetensors import SafetensorError, safe_open

    weights = adapter_dir / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        pickled = f" ({WEIGHTS_NAME} is a pickle; lora reads safetensors only)" if (adapter_dir / WEIGHTS_NAME).is_file() else ""
        raise UserError(f"{adapter_dir}: no {SAFETENSORS_WEIGHTS_NAME}{pickled}; pass a run's complete lora_adapter/ folder")
    try:
        with safe_open(str(weights), framework="pt") as tensors:
            tensors.keys()
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0]}); copy it again from "
                        "the run's output folder (an interrupted copy leaves it short)") from None


def _adapter_mismatch(trained_family: str | None, config: dict, model, family, resolved: ResolvedModel) -> str | None:
    """Why an adapter of another family or model class cannot go on `model` (None: it may). Such an adapter would
    load where module names and shapes happen to agree (Moonshine's and Whisper's q/k/v_proj at one width)."""
    base_class = (config.get("auto_mapping") or {}).get("base_model_class")
    if trained_family and trained_family != family.name:
        return f"a {trained_family} adapter, and {resolved.model_id_used} is a {family.name} model"
    if base_class and base_class != type(model).__name__:
        return f"an adapter for {base_class}, and {resolved.model_id_used} is a {type(model).__name__}"
    return None


def load_adapter(adapter_dir: str | Path, model_id: str | None = None):
    """(model, processor): the adapter's base model (resolved through our import names or the hub)
    with the adapter applied, eval mode; the processor saved in the adapter folder."""
    if not Path(adapter_dir).is_dir():
        raise UserError(f"{adapter_dir}: no such folder; pass a run's lora_adapter/ folder")
    model, processor, _, _, _ = load_with_adapter(Path(adapter_dir), model_id)
    return model, processor
