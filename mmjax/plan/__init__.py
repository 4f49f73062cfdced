"""The model planner: parameters, training FLOPs and memory per module, before anything
runs.

Parameters come from `jax.eval_shape` of the one model definition training initialises
(mmjax/nn/build.py), so they are exact and nothing is allocated. FLOPs are counted
analytically for what the enabled objectives run (forward.py, flops.py) and cross-checked
against XLA; memory is the trainer's shardings on an abstract mesh (memory.py).
"""

from mmjax.plan.flops import (
    SIGNAL_LEADS,
    TRAIN_FLOPS_PER_FORWARD,
    Flops,
    compiled_flops,
    flops_per_example,
    forward_flops,
)
from mmjax.plan.forward import TrainingForward, token_counts, training_forward
from mmjax.plan.memory import (
    UNSHARDED_FLAG_BYTES,
    activation_memory,
    format_memory,
    weight_memory,
)
from mmjax.plan.params import GROUP_PREFIXES, GROUPS, count_params, definition, module_params
from mmjax.plan.shapes import (
    InputShapes,
    example_batch,
    format_shapes,
    has_dataset,
    input_shapes,
    input_shapes_from_manifest,
    shape_overrides,
)
from mmjax.plan.table import MFU_NOTE, format_plan, plan

__all__ = [
    "GROUPS", "GROUP_PREFIXES", "MFU_NOTE", "SIGNAL_LEADS", "TRAIN_FLOPS_PER_FORWARD",
    "UNSHARDED_FLAG_BYTES", "Flops", "InputShapes", "TrainingForward", "activation_memory",
    "compiled_flops", "count_params", "definition", "example_batch", "flops_per_example",
    "format_memory", "format_plan", "format_shapes", "forward_flops", "has_dataset",
    "input_shapes", "input_shapes_from_manifest", "module_params", "plan", "shape_overrides",
    "token_counts", "training_forward", "weight_memory",
]
