"""Token embeddings: image patches and text tokens, with learned positions."""

import einops
import flax.linen as nn
import jax.numpy as jnp


class PatchEmbed(nn.Module):
    """Cuts [B, H, W, C] images into non-overlapping patches and projects each one."""

    patch_size: int
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        _, height, width, _ = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch size {self.patch_size}"
            )
        patches = einops.rearrange(
            images, "b (h p) (w q) c -> b (h w) (p q c)", p=self.patch_size, q=self.patch_size
        )
        return nn.Dense(self.width, dtype=self.dtype, name="proj")(patches)


class PositionEmbed(nn.Module):
    """Adds a learned embedding per position."""

    @nn.compact
    def __call__(self, x):
        _, length, width = x.shape
        pos = self.param("pos", nn.initializers.normal(0.02), (1, length, width), jnp.float32)
        return x + pos.astype(x.dtype)
