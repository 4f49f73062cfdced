"""mmjax: multimodal foundation models for healthcare in JAX/Flax."""

__version__ = "0.2.0"  # the one place; pyproject.toml reads it (CHANGELOG.md says what changed)
