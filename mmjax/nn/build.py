"""The one definition of a model from a config: what training initialises and steps,
what evaluation and export apply, and what the planner counts.

A model is its module (encoders, fusion, heads) together with the objectives it is
trained with: the objectives decide which heads and decoders exist, because `init` runs
through their forward pass and creates exactly the submodules that pass calls.
"""

import dataclasses

import flax.linen as nn
import jax

from mmjax.config import Config, ConfigError, initial_temperature
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.nn.model import MultimodalModel, clamp_scale
from mmjax.objectives.compose import LOG_VARIANCES, Objectives, Setup, Vocab
from mmjax.objectives.diagnosis import positive_weights
from mmjax.parallel import rules
from mmjax.parallel.mesh import PMAP_AXIS, replicated


def split_params(params: dict) -> tuple[dict, dict | None]:
    """(model parameters, uncertainty log-variances or None)."""
    model_params = {k: v for k, v in params.items() if k != LOG_VARIANCES}
    return model_params, params.get(LOG_VARIANCES)


def model_variables(params: dict, batch_stats: dict) -> dict:
    """What model.apply evaluates with: the model's parameters and, with BatchNorm, its
    running statistics (without them in the dict, BatchNorm would be an error)."""
    return {"params": split_params(params)[0],
            **({"batch_stats": batch_stats} if batch_stats else {})}


def variable_shardings(param_shardings: dict, mesh, with_batch_stats: bool) -> dict:
    """Where model_variables() live: parameters as `param_shardings` place them (the
    log-variances dropped), BatchNorm statistics replicated."""
    return {"params": split_params(param_shardings)[0],
            **({"batch_stats": replicated(mesh)} if with_batch_stats else {})}


@dataclasses.dataclass(frozen=True)
class Parameters:
    """The parameters training creates, before any is: shapes and where each lives."""

    shapes: dict  # ShapeDtypeStructs, the log-variances included
    shardings: dict  # NamedShardings from the logical-axis rules, same tree

    @property
    def model_shapes(self) -> dict:
        return split_params(self.shapes)[0]


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """A model as training, evaluation, export and the planner all see it."""

    module: MultimodalModel
    objectives: Objectives
    seed: int = 0

    def _init(self, batch):
        rng = jax.random.key(self.seed)
        return self.module.init(rng, batch, rng, method=self.objectives.forward)

    def abstract(self, batch: dict) -> dict:
        """The boxed variables init creates ({"params", maybe "batch_stats"}), as shapes;
        params include the uncertainty log-variances, which are trained like weights."""
        variables = jax.eval_shape(self._init, batch)
        log_variances = self.objectives.init_log_variances()
        if log_variances is not None:
            params = {**variables["params"], LOG_VARIANCES: jax.eval_shape(lambda: log_variances)}
            variables = {**variables, "params": params}
        return variables

    def parameters(self, batch: dict, mesh) -> Parameters:
        """Shapes and shardings on `mesh` (an abstract one will do) of the parameters."""
        # Outside any sharding context: flax would constrain boxed kernels mid-init.
        boxed = self.abstract(batch)["params"]
        return Parameters(nn.meta.unbox(boxed), rules.param_shardings(mesh, boxed))

    def init(self, batch: dict, parameters: Parameters, mesh) -> tuple[dict, dict]:
        """(params, batch_stats), created where `parameters.shardings` place them."""
        def init_model(batch):
            variables = self._init(batch)
            return nn.meta.unbox(variables["params"]), variables.get("batch_stats", {})

        model_shardings = split_params(parameters.shardings)[0]
        params, batch_stats = jax.jit(init_model, out_shardings=(
            model_shardings, replicated(mesh)))(batch)
        log_variances = self.objectives.init_log_variances()
        if log_variances is not None:
            params = {**params, LOG_VARIANCES: log_variances}
        return params, batch_stats

    def forward(self, params: dict, batch_stats: dict, batch: dict, rng):
        """(the objectives' forward outputs, updated batch_stats): BatchNorm normalises
        with the batch's statistics (over the global batch: jit sees all of it, pmap
        averages over its axis)."""
        out, updated = self.module.apply(
            {"params": split_params(params)[0], "batch_stats": batch_stats}, batch, rng,
            method=self.objectives.forward, mutable=["batch_stats"])
        return out, updated.get("batch_stats", batch_stats)

    def clamp(self, params: dict) -> dict:
        """`params` (the log-variances included) after an update, bounds enforced."""
        return clamp_scale(params, self.module.config)

    def contrastive_scalars(self, params: dict):
        """(scale, bias) of the contrastive logits."""
        return self.module.apply({"params": split_params(params)[0]},
                                 method=MultimodalModel.contrastive_scalars)


def vocab(tokenizer) -> Vocab:
    """The MLM view of a tokenizer: its size, its mask token (None: it has none) and the
    ids never masked."""
    roles = tokenizer_lib.specials(tokenizer)
    return Vocab(tokenizer.get_vocab_size(), roles.mask, roles.ids)


def define(cfg: Config, vocabulary: Vocab, num_labels: int, label_prevalence=None,
           audio_rate_hz: float = 0.0) -> ModelDef:
    """The model `cfg` describes for a dataset of `num_labels` labels (its train split's
    `label_prevalence` gives the diagnosis class weights) and audio at `audio_rate_hz`."""
    if cfg.objectives.mlm and vocabulary.mask_id is None:
        raise ConfigError("objectives.mlm needs a tokenizer with a mask token ([MASK] or "
                          "<mask>); this one has none")
    weights = None
    if cfg.objectives.class_weights:
        if label_prevalence is None:
            raise ConfigError("objectives.class_weights needs the dataset's label "
                              "prevalence, which its manifest lacks")
        weights = tuple(float(w) for w in positive_weights(label_prevalence))
    objectives = Objectives(cfg.objectives, Setup(vocabulary, num_labels, weights))
    model_cfg = dataclasses.replace(cfg.model, init_temperature=initial_temperature(
        cfg.model, cfg.objectives.contrastive_loss))
    module = MultimodalModel(model_cfg, vocabulary.size, tuple(cfg.data.modalities), num_labels,
                             audio_rate_hz or 0.0,
                             PMAP_AXIS if cfg.parallel.strategy == "pmap" else None)
    return ModelDef(module, objectives, cfg.train.seed)
