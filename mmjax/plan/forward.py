"""What the training forward of a config's enabled objectives runs, per example, read
from the same registry compose.py runs (mmjax/objectives/): which encoders run over how
many tokens, how often fusion runs, which heads and decoders. FLOPs and activation
memory are both counted from this one description."""

import dataclasses

from mmjax.config import Config, ConfigError, ModelConfig
from mmjax.objectives import registry
from mmjax.plan.shapes import InputShapes


@dataclasses.dataclass(frozen=True)
class EncoderPass:
    """One run of a modality's encoder: over every token, or over the `visible` patches
    MAE keeps; `pooled` when its pooled output is used (an unused one XLA drops)."""

    modality: str
    visible: int = 0  # 0: every token
    pooled: bool = True


@dataclasses.dataclass(frozen=True)
class TrainingForward:
    embedded: tuple[str, ...]  # encoded, pooled and projected to the shared space
    passes: tuple[EncoderPass, ...]
    fusions: int  # fusion passes: 1 for diagnosis and risk, 3 per example for matching
    head_outputs: int  # logits of the classifier heads, over all their passes
    mlm: bool
    mae: tuple[tuple[str, int], ...]  # (modality, visible patches)
    caption: bool
    caption_context: tuple[str, ...]  # what the report decoder cross-attends to


def encoder_config(model_cfg: ModelConfig, modality: str):
    return {"image": model_cfg.image, "video": model_cfg.video, "signal": model_cfg.signal,
            "report": model_cfg.text, "audio": model_cfg.audio}[modality]


def token_counts(model_cfg: ModelConfig, shapes: InputShapes, modality: str) -> tuple[int, int]:
    """(tokens the encoder's transformer runs over, tokens it hands to fusion and the
    decoders): a CLS token is attended over but only pooled."""
    cfg, side = encoder_config(model_cfg, modality), shapes.image_size
    if modality == "report":
        return shapes.text_len, shapes.text_len
    if modality == "image":
        tokens = (side // cfg.patch_size) ** 2
    elif modality == "video":
        tokens = shapes.frames // cfg.tubelet_frames * (side // cfg.patch_size) ** 2
        if cfg.attention == "factorised":
            return tokens, tokens
    else:
        tokens = shapes.signal_samples // cfg.patch_size
    return tokens + (cfg.pool == "cls"), tokens


def visible_patches(cfg: Config, shapes: InputShapes, modality: str) -> int:
    """The patches MAE keeps, as objectives/mae.py's random_keep draws them."""
    patches = token_counts(cfg.model, shapes, modality)[1]
    return max(1, round(patches * (1 - cfg.objectives.mae_mask_ratio)))


def training_forward(cfg: Config, shapes: InputShapes) -> TrainingForward:
    """What Objectives.forward runs for `cfg` on one example of `shapes`."""
    o, modalities = cfg.objectives, tuple(cfg.data.modalities)
    enabled = {objective.name: objective for objective in registry.enabled(o)}
    if any(objective.uses_fusion for objective in enabled.values()):
        embedded = modalities
    else:
        embedded = tuple(sorted({m for objective in enabled.values()
                                 for m in objective.encodes(o, modalities)}))
    context = tuple(m for m in modalities if m != "report") if "caption" in enabled else ()
    mae = tuple((m, visible_patches(cfg, shapes, m)) for m in o.mae_modalities
                ) if "mae" in enabled else ()
    passes = [EncoderPass(m) for m in embedded]
    # The report decoder encodes what the objectives did not already, for its memory.
    passes += [EncoderPass(m, pooled=False) for m in context if m not in embedded]
    if "mlm" in enabled:  # the text encoder again, over the masked text
        passes.append(EncoderPass("report", pooled=False))
    passes += [EncoderPass(m, visible, pooled=False) for m, visible in mae]
    matching = "matching" in enabled
    heads = (shapes.num_labels * ("diagnosis" in enabled) + ("risk" in enabled)
             + 3 * 2 * matching)
    return TrainingForward(
        embedded=embedded, passes=tuple(passes),
        fusions=("diagnosis" in enabled or "risk" in enabled) + 3 * matching,
        head_outputs=heads, mlm="mlm" in enabled, mae=mae,
        caption="caption" in enabled, caption_context=context)


def check_encoders(model_cfg: ModelConfig, forward: TrainingForward) -> None:
    """The analytic counts model transformer encoders; they would be silently wrong for
    the others, so those are refused by name."""
    running = {p.modality for p in forward.passes}
    unmodelled = {"model.image_encoder": "image" in running and model_cfg.image_encoder != "vit",
                  "model.video.encoder": "video" in running
                  and model_cfg.video.encoder != "tubelet",
                  "model.signal.encoder": "signal" in running
                  and model_cfg.signal.encoder != "transformer",
                  "data.modalities": "audio" in running}
    named = [key for key, bad in unmodelled.items() if bad]
    if named:
        raise ConfigError(f"the planner models transformer encoders over image, video, signal "
                          f"and report only; {', '.join(named)} choose(s) an encoder it cannot "
                          "count yet (CNN, frame + temporal, signal CNN or audio)")
