"""`--compile` (`lora.model_utils.compiled`): one traced graph for every batch shape (no graph break, no
recompilation as clip counts and lengths change; a micro-batch of one clip is one more graph, as
TorchDynamo specialises a size of 1), the same losses as the eager model, and generation
through its attention function the same as through transformers' SDPA.

Traced with `backend="eager"` (TorchDynamo's graph capture without code generation: seconds, not the
minutes inductor takes on 2 cores); the graphs and guards are the ones inductor would compile."""

from __future__ import annotations

import itertools

import pytest

from lora.data.records import read_librispeech_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def clips(speech_dir):
    return read_librispeech_dir(speech_dir, ["dev-clean"])[:7]  # micro-batches of 4 and 3 clips


def _train(model_dir, clips, compile_it: bool, run_dir=None) -> tuple[list[float], list[tuple]]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import LoaderOptions, prepare_dataset
    from lora.model_utils import attach_lora, compiled, load_base, resolve_model_id
    from lora.training import example_source, train_lora
    from lora.training_config import TrainConfig

    set_seed(0)
    model, processor, family = load_base(resolve_model_id(str(model_dir)))
    model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    examples = prepare_dataset(clips, processor, family)
    options = LoaderOptions(batch_size=4, seed=0)
    source = example_source(examples, family, options)
    shapes = [tuple(tuple(v.shape) for v in b.tensors.values()) for b in itertools.islice(source(0, 1, 0), 3)]  # endless
    model = compiled(model, backend="eager") if compile_it else model
    cfg = TrainConfig(batch_size=4, gradient_accumulation_steps=1, max_steps=3, checkpoint_every=2 if run_dir else 0, seed=0)
    result = train_lora(model, family, source, cfg, Accelerator(), show_progress=False, cache_encoder=False, run_dir=run_dir)
    return [r["loss"] for r in result.history], shapes


def test_compiled_model_is_one_graph_for_every_batch_shape(tiny_model_dir, clips, tmp_path):
    import torch
    from safetensors import safe_open
    from torch._dynamo.utils import counters

    from lora.checkpoint import CHECKPOINT_DIR

    eager_losses, shapes = _train(tiny_model_dir, clips, compile_it=False, run_dir=tmp_path / "eager")
    first, second = shapes[0], shapes[1]  # clip count and label length change (and Moonshine's audio length): not one static graph
    assert first[0][0] != second[0][0] and first[-1][1] != second[-1][1], shapes
    torch._dynamo.reset()
    counters.clear()
    losses, _ = _train(tiny_model_dir, clips, compile_it=True, run_dir=tmp_path / "compiled")
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1  # traced once; a new shape is neither a new graph nor a break
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    keys = {}
    for run in ("eager", "compiled"):  # the checkpoint names the adapter's weights as an eager run does (resumable either way)
        with safe_open(str(tmp_path / run / CHECKPOINT_DIR / "adapter.safetensors"), "pt") as f:
            keys[run] = sorted(f.keys())
    assert keys["compiled"] == keys["eager"] and keys["eager"]


def test_compiled_attention_generates_as_transformers_sdpa(tiny_model_dir, clips):
    import torch

    from lora.model_utils import COMPILED_ATTENTION, compiled, load_base, resolve_model_id

    model, processor, family = load_base(resolve_model_id(str(tiny_model_dir)))
    inputs = family.pad_inputs([family.featurize(processor, u.samples()) for u in clips[:2]])
    with torch.no_grad():
        sdpa = model.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1)
        compiled(model, backend="eager")  # switches the attention implementation (the returned wrapper unused)
        assert model.config._attn_implementation == COMPILED_ATTENTION
        ours = model.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1)  # prefill + cached steps
    assert torch.equal(sdpa, ours)


def test_eager_module_is_the_model_inside_the_compiled_wrapper(tiny_moonshine):
    from lora.model_utils import attach_lora, compiled, eager_module, load_base, resolve_model_id

    model, _, family = load_base(resolve_model_id(str(tiny_moonshine)))
    model = attach_lora(model, 4, 8, 0.0, family.default_target_modules)
    wrapped = compiled(model, backend="eager")
    assert wrapped is not model and eager_module(wrapped) is model and eager_module(model) is model
    assert list(eager_module(wrapped).state_dict()) == list(model.state_dict())  # the model's own names, no `_orig_mod.`
