"""Trained encoders as artifacts that run without the model code.

`export` writes, per modality, the embedding function f(params, *inputs) -> unit-norm
[batch, embed_dim] as serialized StableHLO (jax.export, symbolic batch, lowered for
CPU, CUDA and TPU) and that encoder's parameters as safetensors, beside the tokenizer,
the training config, export.json (what each function takes) and MODEL_CARD.md.

`load` needs only jax, numpy, safetensors and tokenizers: no flax, no mmjax.nn, so an
export keeps working where the training code is absent or has since changed. It
tokenizes with mmjax.data.tokenizer.encode, which imports only numpy and tokenizers,
so texts are cut and padded exactly as in training.
"""

from mmjax.export.reader import ExportedModel, load

__all__ = ["ExportedModel", "export", "load"]


def __getattr__(name: str):
    """`export` imports the training side (config, model, checkpoints) only when used, so
    `from mmjax.export import load` stays within the loader's few dependencies."""
    if name == "export":
        from mmjax.export.writer import export

        return export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
