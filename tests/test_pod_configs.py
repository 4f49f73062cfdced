"""The pod-scale experiment files: each loads, its mesh fits its device count and batch,
and the memory its docstring states is what `mmjax plan` computes and fits the chip."""

import importlib.util
import re

import pytest
from conftest import REPO

from mmjax import config as config_lib
from mmjax import plan as plan_lib
from mmjax.parallel.mesh import mesh_shape

CONFIGS = ["pod_clip_b16_v4_32", "pod_clip_b16_v5p_64", "pod_vit_l14_fsdp_v5p_256",
           "pod_video_v5p_128", "gpu_node_clip"]
GIB = 1 << 30


@pytest.mark.parametrize("name", CONFIGS)
def test_pod_config_plans_to_fit_its_chips(name):
    path = REPO / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = config_lib.load(path)
    data, fsdp, tensor = mesh_shape(cfg.parallel, module.DEVICES)
    assert data * fsdp * tensor == module.DEVICES
    assert cfg.train.batch_size % (data * fsdp * cfg.train.accumulation_steps) == 0
    shapes = plan_lib.input_shapes(cfg, plan_lib.shape_overrides(module.PLAN_SHAPES))
    weights = plan_lib.weight_memory(cfg, shapes, module.DEVICES)
    activations = plan_lib.activation_memory(cfg, shapes, module.DEVICES)
    total = (weights["total"] + activations["total"]) / GIB
    assert total < 0.5 * module.HBM_GIB  # heads and XLA's temporaries need the rest
    stated = re.search(r"at least\s+([\d.]+) GiB", module.__doc__)
    assert stated and float(stated.group(1)) == pytest.approx(total, abs=0.01), total
