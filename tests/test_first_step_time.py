"""`TrainResult.first_step_wall` is when the first optimizer step ended, not when its loss was read: the
loop reads a step's loss one step late (no per-step host sync), which had put the time to the first step
a whole step too late (RESULTS.md, "A 100-hour manifest")."""

from __future__ import annotations

import time


def test_first_step_time_is_before_the_second_step_starts(tiny_moonshine, librispeech_utterances):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import LoaderOptions, prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import example_source, train_lora
    from lora.training_config import TrainConfig

    set_seed(0)
    model, processor, family = load_base(resolve_model_id(str(tiny_moonshine)))
    examples = prepare_dataset(sorted(librispeech_utterances, key=lambda u: u.id)[:4], processor, family)
    model = attach_lora(model, 4, 8, 0.0, (family.attention_in("decoder"),))
    source = example_source(examples, family, LoaderOptions(batch_size=1, seed=0))
    asked: list[float] = []  # when the loop asked for each micro-batch

    def timed_source(rank, world, skip):
        for batch in source(rank, world, skip):
            asked.append(time.perf_counter())
            yield batch

    timed_source.__dict__.update(source.__dict__)
    cfg = TrainConfig(batch_size=1, gradient_accumulation_steps=1, max_steps=3, checkpoint_every=0, seed=0)
    result = train_lora(model, family, timed_source, cfg, Accelerator(), show_progress=False)
    assert len(result.history) == 3 and len(asked) == 3
    assert asked[0] < result.first_step_wall < asked[1]  # step 1 ended before step 2's batch was asked for
