"""The objective registry and its composition: every objective file registers itself, the
config's field order orders the losses, and a new objective is one registration plus one
weight field — its loss then enters the forward pass, the weights and the total."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import Config, ModelConfig, ObjectivesConfig, TextConfig, ViTConfig
from mmjax.data import schema
from mmjax.nn import build
from mmjax.objectives import registry
from mmjax.objectives.compose import Objectives, Setup, Vocab
from mmjax.objectives.terms import term
from mmjax.parallel.mesh import make_mesh

SIZES = {"S": 16, "C": 1, "L": 8, "F": 3}


def _batch(modalities=("image", "report"), size=4, seed=0):
    rng = np.random.default_rng(seed)
    batch = {}
    for name, (dtype, shape) in schema.batch_layout(modalities, SIZES).items():
        if dtype == "bool":
            batch[name] = np.ones((size, *shape), bool)
        elif dtype == "int32":
            batch[name] = rng.integers(5, 50, (size, *shape)).astype(np.int32)
        else:
            batch[name] = rng.standard_normal((size, *shape)).astype(np.float32)
    batch["labels"] = (batch["labels"] > 0).astype(np.float32)
    batch["risk"] = (batch["risk"] > 0).astype(np.float32)
    return batch


def _config(objectives: ObjectivesConfig) -> Config:
    small = {"width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32}
    cfg = Config(model=ModelConfig(image=ViTConfig(patch_size=8, **small),
                                   text=TextConfig(**small), embed_dim=8))
    cfg.objectives = objectives
    return cfg


def test_every_objective_file_registers_itself_in_config_order():
    everything = ObjectivesConfig(mlm=1, mae=1, matching=1, caption=1, diagnosis=1, risk=1)
    names = [o.name for o in registry.enabled(everything)]
    assert names == ["contrastive", "mlm", "mae", "caption", "matching", "diagnosis", "risk"]
    assert [o.name for o in registry.enabled(ObjectivesConfig())] == ["contrastive"]
    weights = Objectives(everything, Setup(Vocab(60), num_labels=3)).weights
    assert list(weights) == ["contrastive/image-report", "mlm", "mae/image", "caption",
                             "matching", "diagnosis", "risk"]


def test_the_batch_layout_is_what_the_model_reads():
    layout = schema.batch_layout(("image", "report"), SIZES)
    assert layout["image"] == ("float32", (16, 16, 1))
    assert layout["text"] == ("int32", (8,)) and layout["has_report"] == ("bool", ())
    assert set(schema.TARGETS) <= set(layout)


@dataclasses.dataclass
class WithEmbeddingNorm(ObjectivesConfig):
    """A user's objectives config with one more weight field."""

    embedding_norm: float = 0.0


def _embedding_norm_terms(f) -> dict:
    """A toy objective: the squared distance of the image embeddings from the origin."""
    embeddings = f.module.embed("image", f.module.encode("image", f.batch)[0])
    return {"embedding_norm": term(jnp.sum(embeddings ** 2, -1), f.present["image"])}


@pytest.fixture
def embedding_norm():
    registry._load_all()
    registry.register(registry.Objective("embedding_norm", terms=_embedding_norm_terms))
    yield
    del registry.OBJECTIVES["embedding_norm"]


def test_a_new_objective_is_one_registration_and_one_config_field(embedding_norm):
    objectives = WithEmbeddingNorm(contrastive=1.0, embedding_norm=0.25)
    cfg = _config(objectives)
    definition = build.define(cfg, Vocab(60), num_labels=3)
    batch = _batch()
    mesh = make_mesh(cfg.parallel, jax.devices()[:1])
    params, _ = definition.init(batch, definition.parameters(batch, mesh), mesh)
    out, _ = definition.forward(params, {}, batch, jax.random.key(1))
    assert set(out["terms"]) == {"embedding_norm"}
    total, count = out["terms"]["embedding_norm"]
    assert float(count) == 4 and float(total) == pytest.approx(4.0, rel=1e-4)  # unit norm
    losses = definition.objectives.losses(out, lambda a, b, scale, bias, valid: jnp.float32(2.0))
    assert set(losses) == {"embedding_norm", "contrastive/image-report"}
    assert float(definition.objectives.total(losses, None)) == pytest.approx(
        0.25 * float(total) / 4 + 1.0 * 2.0, rel=1e-5)
