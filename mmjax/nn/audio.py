"""The audio encoder: heart sounds (and any mono audio) as tokens for a transformer.

`spectrogram` is AST (Gong et al. 2021): a log-mel spectrogram computed inside the
jitted model, normalised per recording, cut into square (frames x bands) patches.
`waveform` cuts the raw, standardised waveform into 1-D patches like the ECG encoder.
Either way, tokens that cover only the zero padding of a shorter recording are masked.
"""

import einops
import flax.linen as nn
import jax.numpy as jnp

from mmjax.config import AudioConfig
from mmjax.nn import melspec
from mmjax.nn.embed import PatchEmbed
from mmjax.nn.encoders import _TokenEncoder
from mmjax.nn.transformer import BlockOptions

ENCODERS = ("spectrogram", "waveform")


def spectrogram_settings(cfg: AudioConfig, rate_hz: float) -> dict:
    """Window, hop and band settings in samples, as log_mel_spectrogram takes them."""
    return {"n_fft": round(rate_hz * cfg.window_ms / 1000),
            "hop": round(rate_hz * cfg.hop_ms / 1000), "n_mels": cfg.mel_bins,
            "f_min": cfg.min_hz, "f_max": cfg.max_hz or None}


class AudioEncoder(_TokenEncoder):
    """[B, N] recordings at `rate_hz` with `lengths` [B] real samples -> (pooled, tokens, mask)."""

    config: AudioConfig
    rate_hz: float
    options: BlockOptions = BlockOptions()

    @nn.compact
    def __call__(self, audio, lengths=None):
        cfg, o = self.config, self.options
        if cfg.encoder not in ENCODERS:
            raise ValueError(f"unknown audio encoder '{cfg.encoder}'; choose from {ENCODERS}")
        if not self.rate_hz > 0:
            raise ValueError("the audio encoder needs the dataset's audio_rate_hz")
        size = audio.shape[1]
        lengths = jnp.full(audio.shape[:1], size) if lengths is None else lengths
        # Whatever follows a recording's end is silence, as an unpadded recording's STFT sees.
        audio = jnp.where(jnp.arange(size) < lengths[:, None], audio, 0.0)
        if cfg.encoder == "spectrogram":
            x, real = self._spectrogram_patches(audio, lengths)
        else:
            x, real = self._waveform_patches(audio, lengths)
        # The first token always counts, so a recording of zero samples pools to something.
        real = real.at[:, 0].set(True)
        return self.encode(x, cfg, o, mask=real)

    def _spectrogram_patches(self, audio, lengths):
        cfg, o, p = self.config, self.options, self.config.patch_size
        settings = spectrogram_settings(cfg, self.rate_hz)
        if cfg.mel_bins % p:
            raise ValueError(f"model.audio.mel_bins {cfg.mel_bins} is not divisible by "
                             f"model.audio.patch_size {p}")
        features = melspec.log_mel_spectrogram(audio, self.rate_hz, **settings)
        frames_real = melspec.frame_mask(lengths, audio.shape[1], settings["hop"])
        features = melspec.normalize(features, frames_real)
        usable = features.shape[1] // p * p  # the last, partial patch row is dropped
        if not usable:
            raise ValueError(f"{audio.shape[1]} samples give fewer than {p} spectrogram frames")
        x = PatchEmbed((p, p), cfg.width, o.dtype, o.param_dtype, name="patch_embed")(
            features[:, :usable, :, None].astype(o.dtype))
        real = einops.repeat(frames_real[:, :usable:p], "b t -> b (t m)", m=cfg.mel_bins // p)
        return x, real

    def _waveform_patches(self, audio, lengths):
        cfg, o, p = self.config, self.options, self.config.waveform_patch
        usable = audio.shape[1] // p * p
        if not usable:
            raise ValueError(f"{audio.shape[1]} samples are fewer than one {p}-sample patch")
        samples_real = jnp.arange(audio.shape[1]) < lengths[:, None]
        waveform = melspec.normalize(audio[..., None], samples_real)
        x = PatchEmbed((p,), cfg.width, o.dtype, o.param_dtype, name="patch_embed")(
            waveform[:, :usable].astype(o.dtype))
        return x, samples_real[:, :usable:p]
