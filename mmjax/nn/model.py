"""The multimodal model: an encoder per modality, projections to a shared space,
fusion and task heads on one backbone."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.config import ModelConfig, has_patches, initial_temperature
from mmjax.data.schema import MODALITIES
from mmjax.nn.audio import AudioEncoder
from mmjax.nn.cnn import CNNEncoder
from mmjax.nn.cnn1d import SignalCNNEncoder
from mmjax.nn.embed import patchify
from mmjax.nn.encoders import SignalEncoder, TextEncoder, VideoEncoder, ViTEncoder
from mmjax.nn.fusion import Fusion
from mmjax.nn.heads import (
    ClassifierHead,
    DecisionHead,
    MaeDecoder,
    MlmHead,
    MlpProjection,
    ReportDecoder,
)
from mmjax.nn.layers import dense
from mmjax.nn.temporal import FrameVideoEncoder, takes_valid
from mmjax.nn.transformer import BlockOptions

IMAGE_ENCODERS = ("vit", "resnet", "vgg")
VIDEO_ENCODERS = ("tubelet", "frames")
SIGNAL_ENCODERS = ("transformer", "xresnet1d")


def image_encoder(cfg: ModelConfig, kind: str, options: BlockOptions, batch_axis=None):
    """A ViT (model.image) or a CNN (model.cnn) over [B, H, W, C] images."""
    if kind == "vit":
        return ViTEncoder(cfg.image, options)
    if kind in ("resnet", "vgg"):
        return CNNEncoder(cfg.cnn, kind, options, batch_axis)
    raise ValueError(f"unknown image encoder '{kind}'; choose from {IMAGE_ENCODERS}")


def video_encoder(cfg: ModelConfig, options: BlockOptions, batch_axis=None):
    """Tubelets through a transformer, or each frame through an image encoder and then a
    temporal encoder (model.video.encoder)."""
    if cfg.video.encoder == "tubelet":
        return VideoEncoder(cfg.video, options)
    if cfg.video.encoder == "frames":
        frames = image_encoder(cfg, cfg.video.frame_encoder, options, batch_axis)
        return FrameVideoEncoder(cfg.video, frames, options)
    raise ValueError(f"unknown video encoder '{cfg.video.encoder}'; choose from "
                     f"{VIDEO_ENCODERS}")


def signal_encoder(cfg: ModelConfig, options: BlockOptions, batch_axis=None):
    """1-D patches through a transformer (model.signal) or xresnet1d (model.signal_cnn)."""
    if cfg.signal.encoder == "transformer":
        return SignalEncoder(cfg.signal, options)
    if cfg.signal.encoder == "xresnet1d":
        return SignalCNNEncoder(cfg.signal_cnn, options, batch_axis)
    raise ValueError(f"unknown signal encoder '{cfg.signal.encoder}'; choose from "
                     f"{SIGNAL_ENCODERS}")


def l2_normalize(x, eps: float = 1e-6):
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def batch_size(batch: dict) -> int:
    """Every field of a batch leads with the batch axis; a decoding batch has no text."""
    return (batch["text"] if "text" in batch else jax.tree.leaves(batch)[0]).shape[0]


def clamp_scale(params: dict, cfg: ModelConfig) -> dict:
    """`params` with logit_scale clamped to [ln min_logit_scale, ln
    max_logit_scale], as open_clip clamps it after each optimizer step: clipping
    exp(logit_scale) in the forward instead would zero its gradient past the bound for good."""
    if "logit_scale" not in params:
        return params
    low, high = math.log(cfg.min_logit_scale), math.log(cfg.max_logit_scale)
    return {**params, "logit_scale": jnp.clip(params["logit_scale"], low, high)}


def _constant(value: float):
    """A float32 array initialiser: a Python-float init is weak-typed and recompiles."""
    return lambda _: jnp.asarray(value, jnp.float32)


class MultimodalModel(nn.Module):
    """Encoders for `modalities`, contrastive projections, fusion, heads.

    Calling it on a batch returns a dict with unit-norm `embeddings` per modality,
    the contrastive `scale` and `bias`, the `fused` vector and head logits.
    """

    config: ModelConfig
    vocab_size: int
    modalities: tuple[str, ...] = ("image", "report")
    num_labels: int = 0
    audio_rate_hz: float = 0.0  # the dataset's; the spectrogram is computed in the model
    batch_axis: str | None = None  # the pmap axis BatchNorm averages its statistics over

    def setup(self):
        cfg = self.config
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        options = BlockOptions(remat=cfg.remat, dtype=dtype, param_dtype=param_dtype)
        builders = {
            "image": lambda: image_encoder(cfg, cfg.image_encoder, options, self.batch_axis),
            "video": lambda: video_encoder(cfg, options, self.batch_axis),
            "signal": lambda: signal_encoder(cfg, options, self.batch_axis),
            "audio": lambda: AudioEncoder(cfg.audio, self.audio_rate_hz, options),
            "report": lambda: TextEncoder(cfg.text, self.vocab_size, options),
        }
        self.encoders = {m: builders[m]() for m in self.modalities}
        self.projections = {m: self._projection(m) for m in self.modalities}
        # define() resolves the temperature for its loss; alone, the model starts at CLIP's.
        self.logit_scale = self.param("logit_scale",
                                      _constant(math.log(1.0 / initial_temperature(cfg))))
        self.logit_bias = self.param("logit_bias", _constant(cfg.init_bias))
        if cfg.fusion.kind != "decision":
            self.fusion = Fusion(cfg.fusion, tuple(self.modalities), options)
        if self.num_labels:
            self.diagnosis = self._task_head(self.num_labels)
        self.risk = self._task_head(1)
        self.matching = ClassifierHead(2, dtype, param_dtype)
        self.mlm = MlmHead(dtype, param_dtype)
        d = cfg.decoder
        self.mae_decoders = {
            m: MaeDecoder(d.width, d.depth, d.num_heads, d.mlp_dim, options)
            for m in self.modalities if has_patches(cfg, m)
        }
        if "report" in self.modalities:
            self.report_decoder = ReportDecoder(d.depth, cfg.text.num_heads, d.mlp_dim,
                                                cfg.text.max_positions, options)
            others = [m for m in self.modalities if m != "report"]
            memory = {"tokens": ("",), "pooled": ("pooled",), "both": ("", "pooled")}[d.memory]
            self.memory_projections = {
                (m, kind): dense(cfg.text.width, "embed", "embed", dtype, param_dtype,
                                 "_".join(filter(None, ("memory", m, kind))))
                for m in others for kind in memory
            }

    def _task_head(self, outputs: int):
        """A classifier on the fused vector, or under decision fusion one per modality."""
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        if cfg.fusion.kind == "decision":
            return DecisionHead(outputs, tuple(self.modalities), cfg.fusion.decision_gate,
                                dtype, param_dtype)
        return ClassifierHead(outputs, dtype, param_dtype)

    def fuse(self, encoded: dict, embeddings: dict, present: dict):
        """What the diagnosis and risk heads read: the fused vector [B, D], or under
        decision fusion every modality's embedding with its presence, ([B, M, E], [B, M])."""
        if self.config.fusion.kind == "decision":
            return (jnp.stack([embeddings[m] for m in self.modalities], 1),
                    jnp.stack([present[m] for m in self.modalities], 1))
        return self.fusion(encoded, embeddings, present)

    def _projection(self, modality: str):
        """Pooled encoder output -> the shared space: linear without bias, except where an
        imported text tower brings its own (a bias, or an MLP)."""
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        name = f"proj_{modality}"
        if modality == "report" and cfg.text.projection_hidden:
            return MlpProjection(cfg.text.projection_hidden, cfg.embed_dim, dtype, param_dtype,
                                 name=name)
        return dense(cfg.embed_dim, "embed", "embed", dtype, param_dtype, name,
                     use_bias=modality == "report" and cfg.text.projection_bias)

    # ---- Generative heads.

    def patch_shape(self, modality: str) -> tuple[int, ...]:
        cfg = self.config
        return {"image": (cfg.image.patch_size,) * 2, "signal": (cfg.signal.patch_size,),
                "video": (cfg.video.tubelet_frames, cfg.video.patch_size, cfg.video.patch_size)
                }[modality]

    def num_patches(self, modality: str, batch: dict) -> int:
        sizes, patch = batch[modality].shape[1:-1], self.patch_shape(modality)
        return math.prod(s // p for s, p in zip(sizes, patch, strict=True))

    def mae(self, modality: str, batch: dict, keep):
        """MAE: encode only the patches at `keep` [B, K], predict every patch's values.

        Returns (predictions, targets), both [B, num_patches, patch_dim]; the targets
        are the raw patches (the objective normalises them per patch).
        """
        inputs = batch[modality]
        targets = patchify(inputs, self.patch_shape(modality))
        encoder = self.encoders[modality]
        if modality == "signal":
            _, tokens, _ = encoder(inputs, batch.get("signal_leads"), keep=keep)
        else:
            _, tokens, _ = encoder(inputs, keep=keep)
        predictions = self.mae_decoders[modality](tokens, keep, targets.shape[1],
                                                  targets.shape[2])
        return predictions, targets

    def report_context(self, batch: dict, encoded: dict | None = None):
        """(context [B, N, W], mask [B, N]): the report decoder's memory, the other
        modalities' tokens, masked where a modality is absent. `encoded` may hold
        modalities' encode() outputs already computed for this batch; `model.decoder.memory`
        says whether a modality contributes its tokens, its pooled vector or both."""
        size, width = batch_size(batch), self.config.text.width
        context = [jnp.zeros((size, 0, width), jnp.float32)]
        context_mask = [jnp.zeros((size, 0), bool)]
        encoded = dict(encoded or {})
        for (m, kind), project in self.memory_projections.items():
            if m not in encoded:
                encoded[m] = self.encode(m, batch)
            pooled, tokens, mask = encoded[m]
            if kind == "pooled":
                tokens, mask = pooled[:, None], jnp.ones((size, 1), bool)
            context.append(project(tokens).astype(jnp.float32))
            present = batch.get(f"has_{m}", jnp.ones(size, bool))
            context_mask.append(mask & present[:, None])
        return jnp.concatenate(context, 1), jnp.concatenate(context_mask, 1)

    def report_logits(self, batch: dict, encoded: dict | None = None):
        """Teacher-forced next-token logits [B, L, vocab] of the report given the other
        present modalities (cross-attention; a null token when none is present)."""
        text_encoder = self.encoders["report"]
        hidden = self.report_decoder(text_encoder.token_embed(batch["text"]), batch["text_mask"],
                                     *self.report_context(batch, encoded))
        return text_encoder.logits(hidden).astype(jnp.float32)

    def init_report_cache(self, batch: dict, max_len: int):
        """Primes the report decoder's 'cache' (apply with mutable=["cache"]) for reports
        of up to `max_len` tokens: the keys and values of the batch's context, projected
        once, and empty self-attention slots. Under jit the priming pass's outputs are
        unused, so XLA keeps only the context's projections."""
        context, context_mask = self.report_context(batch)
        ids = jnp.zeros((context.shape[0], max_len), jnp.int32)
        self.report_decoder(self.encoders["report"].token_embed(ids), jnp.ones(ids.shape, bool),
                            context, context_mask, decode=True)

    def decode_step(self, ids):
        """Next-token logits [B, vocab] after the tokens ids [B] (apply with
        mutable=["cache"]); call t feeds the token at position t of the report."""
        text_encoder = self.encoders["report"]
        hidden = self.report_decoder(text_encoder.token_embed(ids[:, None]), None, None, None,
                                     decode=True)
        return text_encoder.logits(hidden[:, 0]).astype(jnp.float32)

    # ---- Encoding.

    def encode(self, modality: str, batch: dict):
        """(pooled, tokens, token mask) of one modality of the batch.

        Absent inputs (zeros, `has_<modality>` False) are kept out of BatchNorm statistics.
        """
        encoder = self.encoders[modality]
        present = batch.get(f"has_{modality}")
        if modality == "image":
            if takes_valid(encoder):
                return encoder(batch["image"], valid=present)
            return encoder(batch["image"])
        if modality == "video":
            if isinstance(encoder, FrameVideoEncoder):
                video = batch["video"]
                frames = batch.get("video_mask", jnp.ones(video.shape[:2], bool))
                if present is not None:
                    frames = frames & present[:, None]
                return encoder(video, frames)
            return encoder(batch["video"], batch.get("video_mask"))
        if modality == "signal":
            valid = {"valid": present} if takes_valid(encoder) else {}
            return encoder(batch["signal"], batch.get("signal_leads"), **valid)
        if modality == "audio":
            return encoder(batch["audio"], batch.get("audio_length"))
        return encoder(batch["text"], batch["text_mask"])

    def embed(self, modality: str, pooled):
        return l2_normalize(self.projections[modality](pooled).astype(jnp.float32))

    def embed_inputs(self, modality: str, batch: dict):
        """Unit-norm embeddings [B, D] of one modality's inputs (what export serves)."""
        pooled, _, _ = self.encode(modality, batch)
        return self.embed(modality, pooled)

    def embed_image(self, images):
        return self.embed_inputs("image", {"image": images})

    def embed_text(self, token_ids, mask):
        return self.embed_inputs("report", {"text": token_ids, "text_mask": mask})

    def scale(self):
        """exp(logit_scale); training keeps the parameter within its bounds (clamp_scale)."""
        return jnp.exp(self.logit_scale)

    def contrastive_scalars(self):
        """(scale, bias) of the contrastive logits."""
        return self.scale(), self.logit_bias

    def mlm_logits(self, text_tokens):
        """Vocabulary logits of text tokens, tied to the input embeddings."""
        return self.encoders["report"].logits(self.mlm(text_tokens)).astype(jnp.float32)

    # ---- Whole batches.

    def encode_all(self, batch: dict):
        """(encoded, embeddings, present) of every modality."""
        encoded = {m: self.encode(m, batch) for m in self.modalities}
        embeddings = {m: self.embed(m, encoded[m][0]) for m in self.modalities}
        present = {m: batch.get(f"has_{m}", jnp.ones(embeddings[m].shape[0], bool))
                   for m in self.modalities}
        return encoded, embeddings, present

    def predict(self, batch: dict, heads: tuple[str, ...] = ()):
        """What evaluation reads: every modality's embeddings and the fused logits of the
        trained `heads` (diagnosis, risk)."""
        encoded, embeddings, present = self.encode_all(batch)
        out = {"embeddings": embeddings}
        if heads:
            fused = self.fuse(encoded, embeddings, present)
            if "diagnosis" in heads:
                out["diagnosis"] = self.diagnosis(fused)
            if "risk" in heads:
                out["risk_logit"] = self.risk(fused)[:, 0]
        return out

    def contrastive(self, batch: dict):
        """Only what contrastive training needs: embeddings, presence, scale and bias.

        Initialising through this method creates only the encoders and projections.
        """
        _, embeddings, present = self.encode_all(batch)
        return {"embeddings": embeddings, "present": present, "scale": self.scale(),
                "bias": self.logit_bias}

    def __call__(self, batch: dict):
        """Everything: embeddings, the fused vector and every head's logits."""
        encoded, embeddings, present = self.encode_all(batch)
        fused = self.fuse(encoded, embeddings, present)
        outputs = {"embeddings": embeddings, "present": present, "scale": self.scale(),
                   "bias": self.logit_bias, "fused": fused, "risk": self.risk(fused)[:, 0]}
        if self.config.fusion.kind != "decision":  # it cannot match (config.validate)
            outputs["matching"] = self.matching(fused)
        if self.num_labels:
            outputs["diagnosis"] = self.diagnosis(fused)
        if "report" in self.modalities:
            outputs["mlm"] = self.mlm_logits(encoded["report"][1])
        return outputs
