"""An imported checkpoint as an mmjax workdir, so that `mmjax eval --data DATASET`,
`mmjax export` and `--set init.from=DIR` take it like a trained one: `config.json` (the
architecture, the tokenizer's context and the image preprocessing the tower was trained
with), the tokenizer, `imported.json` (where it came from) and checkpoint step 0."""

import dataclasses
import json
import typing
from pathlib import Path

import jax
from PIL import Image

from mmjax import config as config_lib
from mmjax.config.sections import Interpolation
from mmjax.data import tokenizer as tokenizer_lib
from mmjax.interop import big_vision, clip, positions, siglip, timm_bert
from mmjax.interop import blocks as b
from mmjax.interop import tensors as t
from mmjax.nn import build as model_build
from mmjax.parallel.mesh import make_mesh
from mmjax.plan.shapes import InputShapes, example_batch
from mmjax.train import checkpoint as checkpoint_lib
from mmjax.train import pins
from mmjax.trained import IMPORTED_FILE

SOURCES = ("hf", "open_clip", "big_vision")
# Published image preprocessing (mean, std, resize interpolation): OpenAI CLIP's (also
# open_clip's and BiomedCLIP's default) and SigLIP's (SiglipImageProcessor's, big_vision's).
CLIP_PREPROCESSING = ((0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711), "bicubic")
SIGLIP_PREPROCESSING = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
INTERPOLATIONS = typing.get_args(Interpolation)


EXPERIMENT_FILE = "finetune.py"
# A plain-Python experiment beside the import, for `mmjax train --config DIR/finetune.py`.
FINETUNE_EXPERIMENT = '''"""Fine-tune the model `mmjax import` brought in from {source}.

    mmjax train --config THIS_FILE --set data.path=DATASET --workdir NEW_WORKDIR

LiT by default (the image tower locked, the text tower trained); set optim.freeze to ""
to train both, and optim.layer_decay below 1 to train early blocks less. The architecture,
tokenizer and image preprocessing are the import's (its config.json), so nothing here may
change them.
"""

from pathlib import Path

from mmjax import config as config_lib

HERE = Path(__file__).parent


def get_config() -> config_lib.Config:
    cfg = config_lib.read(HERE / "config.json")
    cfg.name = "{name}"
    cfg.init.from_ = str(HERE)
    cfg.data.tokenizer = str(HERE / "tokenizer.json")
    cfg.optim.freeze = "^encoders_image/"
    cfg.optim.learning_rate = 1e-4
    cfg.optim.warmup_steps = 50
    cfg.train.num_steps = 1000
    cfg.train.batch_size = 64
    return cfg
'''


@dataclasses.dataclass(frozen=True)
class Source:
    """What an import reads: the checkpoint, its tokenizer and its normalisation."""

    imported: b.Imported
    family: str  # clip | siglip | timm_bert
    tokenizer: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    pad_token: str | None = None  # an HF tokenizer_config.json's: SigLIP pads with </s>
    pad_id: int | None = None  # open_clip.tokenize pads with 0, whatever the tokenizer says
    lower_case: bool = True  # a SentencePiece tokenizer's (SiglipTokenizer's do_lower_case)


def _preprocessing(path: Path, default: tuple) -> tuple:
    """(mean, std, interpolation) from a preprocessing config, HF's preprocessor_config.json
    (image_mean, image_std, resample as PIL's number) or open_clip's preprocess_cfg (mean,
    std, interpolation), each one it lacks the family's published one."""
    if not path.is_file():
        return default
    spec = b.read_json(path)
    spec = spec.get("preprocess_cfg", spec)
    mean, std, interpolation = default
    keys = ("image_mean", "image_std") if "image_mean" in spec else ("mean", "std")
    if all(key in spec for key in keys):
        mean, std = (tuple(map(float, spec[key])) for key in keys)
    if "resample" in spec:
        try:
            interpolation = Image.Resampling(spec["resample"]).name.lower()
        except (ValueError, TypeError):
            raise t.InteropError(f"{path}: resample {spec['resample']!r} is not a PIL "
                                 "filter number") from None
    interpolation = spec.get("interpolation", interpolation)
    if interpolation not in INTERPOLATIONS:
        raise t.InteropError(f"{path}: interpolation {interpolation!r} is not one mmjax "
                             f"applies at evaluation ({', '.join(INTERPOLATIONS)})")
    return mean, std, interpolation


def read_source(kind: str, path: str | Path, config: str | Path | None = None,
                tokenizer: str | Path | None = None, image_size: int | None = None) -> Source:
    """An HF folder (CLIPModel, SiglipModel) or an open_clip state dict with its config;
    with `image_size`, its position embeddings resampled as the source library does."""
    source = _read_source(kind, Path(path), config, tokenizer)
    if image_size is None:
        return source
    resampled = positions.at_image_size(source.imported, image_size,
                                        antialias=kind == "open_clip")
    return dataclasses.replace(source, imported=resampled)


def _read_source(kind: str, path: Path, config, tokenizer) -> Source:
    if kind == "hf":
        model_type = b.read_json(path / "config.json").get("model_type")
        readers = {"clip": (clip.from_hf, CLIP_PREPROCESSING),
                   "siglip": (siglip.from_hf, SIGLIP_PREPROCESSING)}
        if model_type not in readers:
            raise t.InteropError(f"{path / 'config.json'}: model_type '{model_type}' is not "
                                 f"one mmjax imports ({', '.join(readers)})")
        reader, default = readers[model_type]
        preprocessing = _preprocessing(path / "preprocessor_config.json", default)
        token_config = path / "tokenizer_config.json"
        settings = b.read_json(token_config) if token_config.is_file() else {}
        pad = settings.get("pad_token")
        return Source(reader(path), model_type, Path(tokenizer or _hf_tokenizer(path)),
                      *preprocessing, pad if isinstance(pad, str) else None,
                      lower_case=bool(settings.get("do_lower_case", True)))
    if kind == "big_vision":
        if tokenizer is None:
            raise t.InteropError("--from big_vision needs --tokenizer (the SigLIP tokenizer: "
                                 "its spiece.model or a tokenizer.json)")
        return Source(big_vision.from_npz(path), "siglip", Path(tokenizer),
                      *SIGLIP_PREPROCESSING)
    if kind != "open_clip":
        raise t.InteropError(f"--from {kind}: choose from {', '.join(SOURCES)}")
    if config is None or tokenizer is None:
        raise t.InteropError("--from open_clip needs --config (its model config JSON) and "
                             "--tokenizer (a tokenizer.json or BERT vocab.txt)")
    spec = b.read_json(Path(config))
    model_cfg = spec.get("model_cfg", spec)
    timm = "timm_model_name" in model_cfg.get("vision_cfg", {})
    imported = (timm_bert if timm else clip).from_open_clip(path, config)
    return Source(imported, "timm_bert" if timm else "clip", Path(tokenizer),
                  *_preprocessing(Path(config), CLIP_PREPROCESSING), pad_id=None if timm else 0)


def _hf_tokenizer(folder: Path) -> Path:
    """The folder's tokenizer.json; else its spiece.model (HF SigLIP repos ship only that)."""
    fast, spiece = folder / "tokenizer.json", folder / "spiece.model"
    return spiece if spiece.is_file() and not fast.is_file() else fast


def run_config(source: Source) -> config_lib.Config:
    """The config an imported model evaluates and fine-tunes with: its architecture, its
    context as data.max_text_len (SigLIP attends its padding, so the full context), its
    preprocessing, and the contrastive loss it was trained with."""
    imported = source.imported
    cfg = config_lib.Config(name=f"imported_{source.family}")
    cfg.model = imported.model
    cfg.data.modalities = ("image", "report")
    cfg.data.max_text_len = imported.context
    cfg.data.augment = False
    cfg.data.image_size, cfg.data.image_channels = imported.image_size, imported.channels
    cfg.data.image_mean, cfg.data.image_std = source.mean, source.std
    cfg.data.image_interpolation = source.interpolation
    if source.family == "siglip":
        cfg.objectives.contrastive_loss = "sigmoid"
    cfg.eval.evaluators = ("retrieval", "zeroshot")  # no heads: what a dual encoder does
    return config_lib.validate(cfg)


def write(source: Source, workdir: str | Path) -> Path:
    """Writes the workdir; a folder that already holds a config.json is refused."""
    workdir = Path(workdir)
    if (workdir / "config.json").exists():
        raise config_lib.ConfigError(f"{workdir} already holds a config.json; import into a "
                                     "new --workdir")
    tokenizer = tokenizer_lib.load(source.tokenizer, source.lower_case)
    pad_id = source.pad_id
    if source.pad_token is not None:
        pad_id = tokenizer.token_to_id(source.pad_token)
        if pad_id is None:
            raise t.InteropError(f"{source.tokenizer}: no pad token '{source.pad_token}'")
    if pad_id is not None:  # kept in the workdir's tokenizer.json
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id))
    cfg = run_config(source)
    vocab = model_build.vocab(tokenizer)
    definition = model_build.define(cfg, vocab, 0)
    shapes = InputShapes(image_size=cfg.data.image_size, channels=cfg.data.image_channels,
                         text_len=cfg.data.max_text_len, vocab_size=vocab.size)
    batch = example_batch(shapes, cfg.data.modalities)
    mesh = make_mesh(cfg.parallel, jax.local_devices()[:1])
    params, _ = definition.init(batch, definition.parameters(batch, mesh), mesh)
    params = t.merge(jax.tree.map(jax.device_get, params), source.imported.params)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / pins.TOKENIZER_FILE).write_text(tokenizer.to_str())
    (workdir / IMPORTED_FILE).write_text(json.dumps(
        {"source": source.imported.source, "family": source.family,
         "tokenizer": str(source.tokenizer)}, indent=2) + "\n")
    checkpoint_lib.write_params(workdir / "checkpoints", params)
    (workdir / EXPERIMENT_FILE).write_text(FINETUNE_EXPERIMENT.format(
        source=source.imported.source, name=f"finetune_{source.family}"))
    config_lib.save(cfg, workdir / "config.json")
    return workdir

