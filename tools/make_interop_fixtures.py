"""Build small random-weight PyTorch reference models and write interop test fixtures.

This script is run ONCE, by hand, in a throwaway PyTorch virtualenv.  mmjax and
its test-suite never import torch: the loaders in mmjax read the files written
here (``.safetensors`` weights, ``.json`` configs, ``.npz`` reference
inputs/outputs) and must reproduce the reference outputs without torch.

Command (from the repository root)::

    /tmp/torchvenv/bin/python tools/make_interop_fixtures.py --out tests/data/interop

Pinned versions the committed fixtures were produced with::

    torch==2.13.0 (CPU wheel, installed from local disk)
    transformers==5.24.0
    open_clip_torch==3.3.0   (installed --no-deps)
    timm==1.0.31             (installed --no-deps)
    safetensors, numpy, ftfy, regex, huggingface_hub, pillow (timm.data imports PIL),
    sentencepiece, protobuf (SiglipTokenizer)

How to make such a venv::

    python -m venv V
    V/bin/pip install torch==2.13.0
    V/bin/pip install transformers==5.24.0 safetensors numpy ftfy regex huggingface_hub pillow \
        sentencepiece protobuf
    V/bin/pip install --no-deps open_clip_torch==3.3.0 timm==1.0.31

torchvision is deliberately NOT installed (pip would pull a multi-GB CUDA torch).
open_clip and timm import torchvision at module import time (transforms,
``torchvision.ops.misc.FrozenBatchNorm2d`` ...), only for data transforms and
batch-norm freezing that are never used here.  Before importing timm/open_clip
this script therefore installs a MINIMAL STUB ``torchvision`` package into
``sys.modules`` (see ``_install_torchvision_stub``): plain ``types.ModuleType``
objects whose unknown attributes resolve to placeholder classes that raise if
instantiated, an ``InterpolationMode`` enum, and a ``FrozenBatchNorm2d``
placeholder ``nn.Module``.  It exists only so that ``import open_clip`` /
``import timm`` succeed; no torchvision code path is exercised.  transformers is
imported (and its torchvision availability check cached as False) before the
stub goes in.

Nothing is downloaded: every model is random-init with fixed seeds
(``torch.manual_seed``), then every floating parameter gets extra Gaussian noise
(std 0.05) so that biases / LayerNorm affine params are not trivially 0/1 and a
loader that drops or swaps them fails the tests.  logit_scale / logit_bias are
set to explicit values.  Text towers that need an HF config for a named hub
model (BiomedCLIP's PubMedBERT) get a locally built ``BertConfig`` by
monkeypatching ``open_clip.hf_model.AutoConfig``.

Every fixture is verified before the script finishes: the saved safetensors file
is loaded with ``safetensors.torch.load_file`` into a freshly constructed model
(different seed) with ``strict=True`` and must reproduce the reference outputs;
HF folders are additionally reloaded with ``from_pretrained``.

A machine-readable description of every file (array names, shapes, dtypes,
conventions) is written to ``<out>/manifest.json``.
"""

from __future__ import annotations

import argparse
import enum
import importlib.machinery
import json
import math
import os
import sys
import types

import numpy as np
import safetensors.torch as st
import torch

# transformers first, so its "is torchvision available?" probe runs (and is
# cached) before the stub below is in sys.modules.
import transformers
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
)
from transformers.utils import import_utils as _hf_import_utils

_hf_import_utils.is_torchvision_available()


# --------------------------------------------------------------------------
# torchvision stub (import-only; see module docstring)
# --------------------------------------------------------------------------


class _StubModule(types.ModuleType):
    """Module whose unknown public attributes are placeholder classes."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def _init(self_, *args, **kwargs):
            raise RuntimeError(
                f"torchvision stub: {self.__name__}.{name} is not available "
                "(make_interop_fixtures.py only stubs torchvision for imports)"
            )

        cls = type(name, (object,), {"__init__": _init, "__module__": self.__name__})
        setattr(self, name, cls)
        return cls


def _install_torchvision_stub():
    if "torchvision" in sys.modules:
        return
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.v2",
        "torchvision.ops",
        "torchvision.ops.misc",
        "torchvision.datasets",
        "torchvision.utils",
        "torchvision.io",
    ]
    mods = {}
    for n in names:
        m = _StubModule(n)
        m.__spec__ = importlib.machinery.ModuleSpec(n, None, is_package=True)
        m.__path__ = []
        m.__version__ = "0.0.0+import-stub"
        mods[n] = m
        sys.modules[n] = m
    for n, m in mods.items():
        if "." in n:
            parent, child = n.rsplit(".", 1)
            setattr(mods[parent], child, m)

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        NEAREST_EXACT = "nearest-exact"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        BOX = "box"
        HAMMING = "hamming"
        LANCZOS = "lanczos"

    mods["torchvision.transforms.functional"].InterpolationMode = InterpolationMode
    mods["torchvision.transforms"].InterpolationMode = InterpolationMode

    class FrozenBatchNorm2d(nn.Module):  # placeholder, never instantiated here
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision stub: FrozenBatchNorm2d unavailable")

    mods["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    mods["torchvision.ops"].misc = mods["torchvision.ops.misc"]


_install_torchvision_stub()

import open_clip  # noqa: E402
import open_clip.hf_model  # noqa: E402
import open_clip.timm_model  # noqa: E402
import timm  # noqa: E402
from open_clip.model import CLIP, CustomTextCLIP  # noqa: E402

assert not _hf_import_utils.is_torchvision_available()

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

NOISE_STD = 0.05
MANIFEST: dict = {}


def perturb(model: nn.Module, seed: int, std: float = NOISE_STD):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def clean_state_dict(model: nn.Module) -> dict:
    """Contiguous float32 clones (breaks any tensor sharing)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().clone().contiguous()
        if v.is_floating_point():
            v = v.float()
        out[k] = v
    return out


def to_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy().copy()
    return np.asarray(x)


def describe(arrs: dict) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrs.items()}


def save_npz(path: str, arrs: dict):
    arrs = {k: to_np(v) for k, v in arrs.items()}
    for k, v in arrs.items():
        assert v.dtype != object, k
    np.savez(path, **arrs)
    back = np.load(path, allow_pickle=False)
    for k, v in arrs.items():
        np.testing.assert_array_equal(back[k], v)
    return describe(arrs)


def assert_close(name, a, b, atol=1e-5, rtol=1e-5):
    a, b = to_np(a), to_np(b)
    if not np.allclose(a, b, atol=atol, rtol=rtol):
        raise AssertionError(f"{name}: max abs diff {np.abs(a - b).max()}")


def l2n(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(p=2, dim=-1, keepdim=True)


def pixels(seed: int, b: int, hw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, hw, hw, generator=g, dtype=torch.float32)


def token_rows(seed, lengths, L, lo, hi, first, last, pad) -> torch.Tensor:
    """Rows ``[first, r_1..r_{n-2}, last, pad, ...]`` of total length n each."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        assert 2 <= n <= L
        mid = torch.randint(lo, hi, (n - 2,), generator=g)
        row = torch.cat([torch.tensor([first]), mid, torch.tensor([last]),
                         torch.full((L - n,), pad)])
        rows.append(row)
    return torch.stack(rows).to(torch.int64)


class Capture:
    """Forward hook storing a module's output."""

    def __init__(self, module: nn.Module, fn=lambda o: o):
        self.value = None
        self.fn = fn
        self.h = module.register_forward_hook(self._hook)

    def _hook(self, mod, inp, out):
        self.value = self.fn(out).detach().clone()

    def remove(self):
        self.h.remove()


def file_size(path):
    return os.path.getsize(path)


# --------------------------------------------------------------------------
# shared reduced sizes
# --------------------------------------------------------------------------

B = 3            # batch
IMG = 32         # image side (px)
PATCH = 8        # -> 4x4 = 16 patches
WIDTH = 48       # transformer width, both towers (head dim 12)
LAYERS = 2
HEADS = 4        # head dim 12
MLP = 96         # mlp hidden (mlp_ratio 2)
EMBED = 32       # joint embedding / projection dim
CTX = 16         # text context length
VOCAB = 512      # text vocab size
TEXT_LENGTHS = [CTX, 7, 11]   # real (non-pad) lengths of the 3 text rows


# --------------------------------------------------------------------------
# 1. transformers CLIPModel
# --------------------------------------------------------------------------

def hf_clip_config() -> CLIPConfig:
    text = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=MLP,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                max_position_embeddings=CTX, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, projection_dim=EMBED,
                pad_token_id=1, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)
    vision = dict(hidden_size=WIDTH, intermediate_size=MLP,
                  num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  image_size=IMG, patch_size=PATCH, num_channels=3,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  projection_dim=EMBED)
    return CLIPConfig(text_config=text, vision_config=vision,
                      projection_dim=EMBED, logit_scale_init_value=math.log(1 / 0.07))


def hf_clip_forward(model: CLIPModel, pv, ids, am) -> dict:
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pv, attention_mask=am, return_dict=True)
        img_f = model.get_image_features(pixel_values=pv)
        txt_f = model.get_text_features(input_ids=ids, attention_mask=am)
        # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output
        # is the projected feature; older versions returned a tensor.
        img_f = getattr(img_f, "pooler_output", img_f)
        txt_f = getattr(txt_f, "pooler_output", txt_f)
        vo = model.vision_model(pixel_values=pv, return_dict=True)
        to = model.text_model(input_ids=ids, attention_mask=am, return_dict=True)
    return dict(
        image_embeds=out.image_embeds,
        text_embeds=out.text_embeds,
        image_features_unnormalized=img_f,
        text_features_unnormalized=txt_f,
        logits_per_image=out.logits_per_image,
        logits_per_text=out.logits_per_text,
        logit_scale=model.logit_scale.detach().clone(),
        vision_last_hidden_state=vo.last_hidden_state,
        vision_pooler_output=vo.pooler_output,
        text_last_hidden_state=to.last_hidden_state,
        text_pooler_output=to.pooler_output,
    )


def make_hf_clip(out_dir: str):
    torch.manual_seed(0)
    cfg = hf_clip_config()
    model = CLIPModel(cfg).eval()
    perturb(model, 100)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))

    pv = pixels(1, B, IMG)
    bos, eos, pad = VOCAB - 2, VOCAB - 1, 1
    ids = token_rows(2, TEXT_LENGTHS, CTX, 2, VOCAB - 2, bos, eos, pad)
    am = (torch.arange(CTX)[None, :] < torch.tensor(TEXT_LENGTHS)[:, None]).to(torch.int64)
    ref = hf_clip_forward(model, pv, ids, am)

    # sanity: projected+normalised == embeds; pooling at the eos position
    assert_close("hf_clip img norm", l2n(ref["image_features_unnormalized"]), ref["image_embeds"])
    assert_close("hf_clip txt norm", l2n(ref["text_features_unnormalized"]), ref["text_embeds"])
    eos_pos = ids.argmax(-1)
    assert torch.equal(eos_pos, (ids == eos).int().argmax(-1))
    assert_close("hf_clip pooled",
                 ref["text_pooler_output"],
                 ref["text_last_hidden_state"][torch.arange(B), eos_pos])
    # logits_per_image = exp(logit_scale) * image_embeds @ text_embeds.T
    assert_close("hf_clip logits",
                 ref["logit_scale"].exp() * ref["image_embeds"] @ ref["text_embeds"].T,
                 ref["logits_per_image"])

    folder = os.path.join(out_dir, "hf_clip")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    st_path = os.path.join(folder, "model.safetensors")
    assert os.path.exists(st_path), os.listdir(folder)

    # verify: (a) load_file into a fresh model, (b) from_pretrained
    torch.manual_seed(12345)
    fresh = CLIPModel(CLIPConfig.from_pretrained(folder)).eval()
    sd = st.load_file(st_path)
    missing, unexpected = fresh.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert not missing, missing
    re1 = hf_clip_forward(fresh, pv, ids, am)
    re2 = hf_clip_forward(CLIPModel.from_pretrained(folder).eval(), pv, ids, am)
    for k in ref:
        assert_close(f"hf_clip reload {k}", re1[k], ref[k], atol=1e-6, rtol=1e-6)
        assert_close(f"hf_clip from_pretrained {k}", re2[k], ref[k], atol=1e-6, rtol=1e-6)

    io = dict(pixel_values=pv, input_ids=ids, attention_mask=am, **ref)
    desc = save_npz(os.path.join(out_dir, "hf_clip_io.npz"), io)
    MANIFEST["hf_clip"] = {
        "files": ["hf_clip/config.json", "hf_clip/model.safetensors", "hf_clip_io.npz"],
        "library": f"transformers=={transformers.__version__} CLIPModel",
        "reduced_config": {
            "text": cfg.text_config.to_diff_dict() | {
                k: getattr(cfg.text_config, k) for k in (
                    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings", "hidden_act",
                    "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")},
            "vision": {k: getattr(cfg.vision_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "image_size", "patch_size", "hidden_act",
                "layer_norm_eps")},
            "projection_dim": cfg.projection_dim,
        },
        "arrays": desc,
        "conventions": {
            "pixel_values": "NCHW float32, random N(0,1) (already 'normalised'; no preprocessing)",
            "input_ids": f"int64 rows [bos={bos}, random ids in [2,{VOCAB - 2}), eos={eos}, pad={pad}...]; "
                         f"real lengths {TEXT_LENGTHS}; eos is the highest id in the vocab",
            "attention_mask": "int64, 1 on real tokens (bos..eos), 0 on padding; passed to the model",
            "text_pooling": f"text_config.eos_token_id={eos} != 2, so transformers takes the FIRST position "
                            f"where input_ids == eos_token_id (the eos-id path). Because eos is also the "
                            f"largest id and occurs once per row, the legacy argmax path gives the same index.",
            "causal_mask": "text tower is causal; attention_mask additionally masks padded keys",
            "image_embeds/text_embeds": "projected AND L2-normalised (CLIPModel.forward outputs)",
            "image_features_unnormalized/text_features_unnormalized":
                "get_image_features / get_text_features: projected, NOT normalised",
            "logit_scale": "RAW parameter value (log scale), shape []; logits use exp(logit_scale)",
            "logits_per_image": "[B_img, B_txt] = exp(logit_scale) * image_embeds @ text_embeds.T; "
                                "logits_per_text is its transpose",
            "vision_last_hidden_state": "[B, 1+patches, W] vision ENCODER output (after pre_layrnorm+layers, "
                                        "BEFORE post_layernorm); token 0 is CLS",
            "vision_pooler_output": "post_layernorm(vision_last_hidden_state[:, 0]) (before visual_projection)",
            "text_last_hidden_state": "[B, L, W] AFTER final_layer_norm; at PADDED positions the values are those "
                                      "of HF (causal mask AND attention_mask on keys) - compare real positions "
                                      "only if your implementation treats padding differently",
            "text_pooler_output": "text_last_hidden_state at the eos position (before text_projection)",
            "weights": "all float32; HF key names (text_model.*, vision_model.*, visual_projection.weight, "
                       "text_projection.weight, logit_scale); position_ids buffers are non-persistent and "
                       "absent",
        },
    }


# --------------------------------------------------------------------------
# 2. open_clip CLIP (OpenAI ViT layout)
# --------------------------------------------------------------------------

OC_VISION_CFG = dict(layers=LAYERS, width=WIDTH, head_width=WIDTH // HEADS,
                     mlp_ratio=MLP / WIDTH, patch_size=PATCH, image_size=IMG)
OC_TEXT_CFG = dict(context_length=CTX, vocab_size=VOCAB, width=WIDTH, heads=HEADS,
                   layers=LAYERS, mlp_ratio=MLP / WIDTH)


def oc_forward(model: CLIP, pv, text) -> dict:
    cap_v = Capture(model.visual.ln_post)
    cap_t = Capture(model.ln_final)
    try:
        with torch.no_grad():
            img = model.encode_image(pv)
            txt = model.encode_text(text)
            img_n = model.encode_image(pv, normalize=True)
            txt_n = model.encode_text(text, normalize=True)
            logits_img, logits_txt = model.get_logits(pv, text)
    finally:
        cap_v.remove()
        cap_t.remove()
    return dict(
        image_features=img, text_features=txt,
        image_features_normalized=img_n, text_features_normalized=txt_n,
        logits_per_image=logits_img, logits_per_text=logits_txt,
        logit_scale=model.logit_scale.detach().clone(),
        vision_ln_post_tokens=cap_v.value,
        text_ln_final_tokens=cap_t.value,
    )


def make_open_clip_vit(out_dir: str):
    torch.manual_seed(0)
    model = CLIP(embed_dim=EMBED, vision_cfg=dict(OC_VISION_CFG), text_cfg=dict(OC_TEXT_CFG),
                 quick_gelu=True).eval()
    perturb(model, 200)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))

    pv = pixels(3, B, IMG)
    sot, eot = VOCAB - 2, VOCAB - 1
    text = token_rows(4, TEXT_LENGTHS, CTX, 1, VOCAB - 2, sot, eot, 0)
    ref = oc_forward(model, pv, text)

    # sanity
    assert_close("oc img proj", ref["vision_ln_post_tokens"][:, 0] @ model.visual.proj,
                 ref["image_features"])
    assert_close("oc txt proj", ref["text_ln_final_tokens"][torch.arange(B), text.argmax(-1)]
                 @ model.text_projection, ref["text_features"])

    sd = clean_state_dict(model)
    path = os.path.join(out_dir, "open_clip_vit.safetensors")
    st.save_file(sd, path)
    os.chmod(path, 0o644)
    cfg = {"embed_dim": EMBED, "vision_cfg": OC_VISION_CFG, "text_cfg": OC_TEXT_CFG,
           "quick_gelu": True,
           "constructor": "open_clip.model.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=True)",
           "open_clip_version": open_clip.__version__}
    with open(os.path.join(out_dir, "open_clip_vit.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    torch.manual_seed(999)
    fresh = CLIP(embed_dim=EMBED, vision_cfg=dict(OC_VISION_CFG), text_cfg=dict(OC_TEXT_CFG),
                 quick_gelu=True).eval()
    fresh.load_state_dict(st.load_file(path), strict=True)
    re = oc_forward(fresh, pv, text)
    for k in ref:
        assert_close(f"open_clip_vit reload {k}", re[k], ref[k], atol=1e-6, rtol=1e-6)

    desc = save_npz(os.path.join(out_dir, "open_clip_vit_io.npz"), dict(pixel_values=pv, text=text, **ref))
    MANIFEST["open_clip_vit"] = {
        "files": ["open_clip_vit.safetensors", "open_clip_vit.json", "open_clip_vit_io.npz"],
        "library": f"open_clip_torch=={open_clip.__version__} open_clip.model.CLIP",
        "reduced_config": cfg,
        "derived": {"vision_heads": HEADS, "vision_mlp_hidden": MLP, "text_mlp_hidden": MLP,
                    "num_patches": (IMG // PATCH) ** 2},
        "weight_keys": {k: list(v.shape) for k, v in sd.items()},
        "arrays": desc,
        "conventions": {
            "pixel_values": "NCHW float32 random N(0,1)",
            "text": f"int64 [B, {CTX}] rows [sot={sot}, random ids in [1,{VOCAB - 2}), eot={eot}, 0...]; "
                    f"real lengths {TEXT_LENGTHS}; pooled at text.argmax(-1) (pool_type 'argmax')",
            "attention": "text tower causal (attn_mask buffer is non-persistent -> NOT in the safetensors; "
                         "rebuild as upper-triangular -inf); no padding mask",
            "activation": "QuickGELU x*sigmoid(1.702x) in both towers; LayerNorm eps 1e-5",
            "image_features/text_features": "encode_image/encode_text(normalize=False): projected, NOT normalised",
            "*_normalized": "encode_*(normalize=True) = L2-normalised",
            "logit_scale": "RAW parameter (log scale), shape []; logits_per_image = exp(logit_scale) * "
                           "img_n @ txt_n.T (no logit_bias)",
            "vision_ln_post_tokens": "[B, 1+patches, W] output of visual.ln_post over all tokens "
                                     "(pool 'tok' takes row 0, then @ visual.proj [W, embed])",
            "text_ln_final_tokens": "[B, L, W] output of ln_final (before pooling and @ text_projection [W, embed])",
            "layout": "conv1.weight [W,3,P,P] no bias; class_embedding [W]; positional_embedding [1+patches, W] "
                      "(row 0 = CLS); attn.in_proj_weight [3W, W] packed q,k,v; attn.out_proj; mlp.c_fc/c_proj; "
                      "ln_1/ln_2; proj / text_projection are plain [in, out] matrices used as x @ P",
        },
    }


# --------------------------------------------------------------------------
# 3. transformers SiglipModel
# --------------------------------------------------------------------------

def hf_siglip_config() -> SiglipConfig:
    text = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=MLP,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                max_position_embeddings=CTX, hidden_act="gelu_pytorch_tanh",
                layer_norm_eps=1e-6, pad_token_id=1, bos_token_id=VOCAB - 2,
                eos_token_id=1, projection_size=WIDTH)
    vision = dict(hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, image_size=IMG, patch_size=PATCH,
                  num_channels=3, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                  vision_use_head=True)
    return SiglipConfig(text_config=text, vision_config=vision)


def hf_siglip_forward(model: SiglipModel, pv, ids) -> dict:
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pv, return_dict=True)
        vo = model.vision_model(pixel_values=pv, return_dict=True)
        to = model.text_model(input_ids=ids, return_dict=True)
    return dict(
        image_embeds=out.image_embeds, text_embeds=out.text_embeds,
        image_pooler_output=vo.pooler_output, text_pooler_output=to.pooler_output,
        logits_per_image=out.logits_per_image, logits_per_text=out.logits_per_text,
        logit_scale=model.logit_scale.detach().clone(),
        logit_bias=model.logit_bias.detach().clone(),
        vision_last_hidden_state=vo.last_hidden_state,
        text_last_hidden_state=to.last_hidden_state,
    )


def make_hf_siglip(out_dir: str):
    torch.manual_seed(0)
    cfg = hf_siglip_config()
    model = SiglipModel(cfg).eval()
    perturb(model, 300)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)

    pv = pixels(5, B, IMG)
    eos = pad = 1
    # SigLIP tokenizer style: tokens, eos(=1), padded with pad(=1) to max_length; no bos
    g = torch.Generator().manual_seed(6)
    rows = []
    for n in TEXT_LENGTHS:
        n = min(n, CTX)
        mid = torch.randint(2, VOCAB, (n - 1,), generator=g)
        rows.append(torch.cat([mid, torch.tensor([eos]), torch.full((CTX - n,), pad)])[:CTX])
    ids = torch.stack(rows).to(torch.int64)
    ref = hf_siglip_forward(model, pv, ids)

    assert_close("siglip img norm", l2n(ref["image_pooler_output"]), ref["image_embeds"])
    assert_close("siglip txt norm", l2n(ref["text_pooler_output"]), ref["text_embeds"])
    assert_close("siglip logits",
                 ref["logit_scale"].exp() * ref["image_embeds"] @ ref["text_embeds"].T + ref["logit_bias"],
                 ref["logits_per_image"])

    folder = os.path.join(out_dir, "hf_siglip")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    st_path = os.path.join(folder, "model.safetensors")
    assert os.path.exists(st_path), os.listdir(folder)

    torch.manual_seed(54321)
    fresh = SiglipModel(SiglipConfig.from_pretrained(folder)).eval()
    missing, unexpected = fresh.load_state_dict(st.load_file(st_path), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    re1 = hf_siglip_forward(fresh, pv, ids)
    re2 = hf_siglip_forward(SiglipModel.from_pretrained(folder).eval(), pv, ids)
    for k in ref:
        assert_close(f"siglip reload {k}", re1[k], ref[k], atol=1e-6, rtol=1e-6)
        assert_close(f"siglip from_pretrained {k}", re2[k], ref[k], atol=1e-6, rtol=1e-6)

    desc = save_npz(os.path.join(out_dir, "hf_siglip_io.npz"), dict(pixel_values=pv, input_ids=ids, **ref))
    MANIFEST["hf_siglip"] = {
        "files": ["hf_siglip/config.json", "hf_siglip/model.safetensors", "hf_siglip_io.npz"],
        "library": f"transformers=={transformers.__version__} SiglipModel",
        "reduced_config": {
            "text": {k: getattr(cfg.text_config, k) for k in (
                "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
                "pad_token_id", "eos_token_id", "projection_size")},
            "vision": {k: getattr(cfg.vision_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "image_size", "patch_size", "hidden_act", "layer_norm_eps", "vision_use_head")},
        },
        "arrays": desc,
        "conventions": {
            "pixel_values": "NCHW float32 random N(0,1)",
            "input_ids": f"int64 [B,{CTX}] rows [random ids in [2,{VOCAB}), eos=1, pad=1 ...] padded to "
                         f"max_length; NO attention mask is passed (bidirectional attention over all "
                         f"positions incl. padding)",
            "text_pooling": "last position: text_last_hidden_state[:, -1] -> text_model.head (Linear W->W)",
            "vision_pooling": "MAP head: probe [1,1,W] attends (torch nn.MultiheadAttention, packed in_proj "
                              "[3W,W]) over post_layernorm tokens; + residual MLP on layernorm; take query 0",
            "no CLS token": "vision tokens are patches only (no class embedding); position_embedding is "
                            "nn.Embedding(num_patches, W)",
            "activation": "gelu_pytorch_tanh (tanh-approximate GELU); LayerNorm eps 1e-6",
            "image_embeds/text_embeds": "L2-normalised pooler outputs",
            "image_pooler_output/text_pooler_output": "unnormalised pooled outputs (after head)",
            "logit_scale/logit_bias": "RAW parameters, shape [1]; logits_per_image = img_n @ txt_n.T * "
                                      "exp(logit_scale) + logit_bias",
            "vision_last_hidden_state": "[B, patches, W] AFTER post_layernorm (input to the MAP head)",
            "text_last_hidden_state": "[B, L, W] AFTER final_layer_norm",
        },
    }


# --------------------------------------------------------------------------
# 4. transformers BertModel
# --------------------------------------------------------------------------

def bert_small_config() -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, intermediate_size=MLP,
                      max_position_embeddings=2 * CTX, type_vocab_size=2,
                      hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)


BERT_CLS, BERT_SEP, BERT_PAD = 2, 3, 0   # PubMedBERT/BiomedBERT vocab ids


def bert_forward(model: BertModel, ids, am, tt) -> dict:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=am, token_type_ids=tt, return_dict=True)
    return dict(last_hidden_state=out.last_hidden_state, pooler_output=out.pooler_output)


def make_hf_bert(out_dir: str):
    torch.manual_seed(0)
    cfg = bert_small_config()
    model = BertModel(cfg).eval()
    perturb(model, 400)
    ids = token_rows(7, TEXT_LENGTHS, CTX, 5, VOCAB, BERT_CLS, BERT_SEP, BERT_PAD)
    am = (ids != BERT_PAD).to(torch.int64)
    tt = torch.zeros_like(ids)
    ref = bert_forward(model, ids, am, tt)

    folder = os.path.join(out_dir, "hf_bert")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    st_path = os.path.join(folder, "model.safetensors")
    torch.manual_seed(777)
    fresh = BertModel(BertConfig.from_pretrained(folder)).eval()
    missing, unexpected = fresh.load_state_dict(st.load_file(st_path), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    re1 = bert_forward(fresh, ids, am, tt)
    re2 = bert_forward(BertModel.from_pretrained(folder).eval(), ids, am, tt)
    for k in ref:
        assert_close(f"bert reload {k}", re1[k], ref[k], atol=1e-6, rtol=1e-6)
        assert_close(f"bert from_pretrained {k}", re2[k], ref[k], atol=1e-6, rtol=1e-6)

    desc = save_npz(os.path.join(out_dir, "hf_bert_io.npz"),
                    dict(input_ids=ids, attention_mask=am, token_type_ids=tt, **ref))
    MANIFEST["hf_bert"] = {
        "files": ["hf_bert/config.json", "hf_bert/model.safetensors", "hf_bert_io.npz"],
        "library": f"transformers=={transformers.__version__} BertModel (add_pooling_layer=True)",
        "reduced_config": cfg.to_diff_dict(),
        "arrays": desc,
        "conventions": {
            "input_ids": f"int64 [B,{CTX}] rows [CLS={BERT_CLS}, random ids in [5,{VOCAB}), SEP={BERT_SEP}, "
                         f"PAD={BERT_PAD}...]; real lengths {TEXT_LENGTHS}",
            "attention_mask": "int64 (input_ids != 0)",
            "token_type_ids": "int64 zeros",
            "last_hidden_state": "[B, L, W] encoder output; padded positions included as computed by HF (padded "
                                 "keys masked additively with the dtype minimum; padded queries still attend to real keys)",
            "pooler_output": "tanh(pooler.dense(last_hidden_state[:, 0]))",
            "activation": "exact erf GELU; LayerNorm eps 1e-12",
        },
    }


# --------------------------------------------------------------------------
# 5 (small). open_clip CustomTextCLIP with timm ViT trunk + HF BERT text (BiomedCLIP layout)
# --------------------------------------------------------------------------

class _LocalAutoConfig:
    """Stand-in for transformers.AutoConfig inside open_clip.hf_model (no downloads)."""

    config = None

    @classmethod
    def from_pretrained(cls, name, *args, **kwargs):
        assert cls.config is not None, name
        return cls.config


class patched_open_clip:
    """Context manager: local BertConfig for HFTextEncoder, optional timm kwargs override."""

    def __init__(self, bert_config, timm_overrides=None):
        self.bert_config = bert_config
        self.timm_overrides = timm_overrides or {}

    def __enter__(self):
        self._auto = open_clip.hf_model.AutoConfig
        _LocalAutoConfig.config = self.bert_config
        open_clip.hf_model.AutoConfig = _LocalAutoConfig
        self._create = timm.create_model
        overrides = self.timm_overrides
        orig = self._create

        def create_model(name, *args, **kwargs):
            kwargs.update(overrides)
            return orig(name, *args, **kwargs)

        open_clip.timm_model.timm.create_model = create_model
        return self

    def __exit__(self, *exc):
        open_clip.hf_model.AutoConfig = self._auto
        _LocalAutoConfig.config = None
        open_clip.timm_model.timm.create_model = self._create
        return False


TIMM_SMALL_OVERRIDES = dict(img_size=IMG, patch_size=PATCH, embed_dim=WIDTH, depth=LAYERS,
                            num_heads=HEADS, mlp_ratio=MLP / WIDTH)


def biomedclip_cfgs(image_size, context_length):
    vision_cfg = dict(timm_model_name="vit_base_patch16_224", timm_model_pretrained=False,
                      timm_pool="", timm_proj="linear", image_size=image_size)
    text_cfg = dict(hf_model_name="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                    hf_tokenizer_name="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                    hf_model_pretrained=False, hf_proj_type="mlp",
                    hf_pooler_type="cls_last_hidden_state_pooler", context_length=context_length)
    return vision_cfg, text_cfg


def build_timm_bert(seed):
    vision_cfg, text_cfg = biomedclip_cfgs(IMG, CTX)
    torch.manual_seed(seed)
    with patched_open_clip(bert_small_config(), TIMM_SMALL_OVERRIDES):
        model = CustomTextCLIP(embed_dim=EMBED, vision_cfg=vision_cfg, text_cfg=text_cfg)
    return model.eval(), vision_cfg, text_cfg


def timm_bert_forward(model, pv, text) -> dict:
    cap_v = Capture(model.visual.trunk.norm)
    cap_t = Capture(model.text.transformer, fn=lambda o: o.last_hidden_state)
    try:
        with torch.no_grad():
            img = model.encode_image(pv)
            txt = model.encode_text(text)
            img_n = model.encode_image(pv, normalize=True)
            txt_n = model.encode_text(text, normalize=True)
            li, lt = model.get_logits(pv, text)
    finally:
        cap_v.remove()
        cap_t.remove()
    return dict(image_features=img, text_features=txt,
                image_features_normalized=img_n, text_features_normalized=txt_n,
                logits_per_image=li, logits_per_text=lt,
                logit_scale=model.logit_scale.detach().clone(),
                vision_trunk_norm_tokens=cap_v.value,
                text_last_hidden_state=cap_t.value)


def make_open_clip_timm_bert(out_dir: str):
    model, vision_cfg, text_cfg = build_timm_bert(0)
    perturb(model, 500)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    pv = pixels(8, B, IMG)
    text = token_rows(9, TEXT_LENGTHS, CTX, 5, VOCAB, BERT_CLS, BERT_SEP, BERT_PAD)
    ref = timm_bert_forward(model, pv, text)

    # sanity on the head layout
    assert_close("timm_bert img", ref["vision_trunk_norm_tokens"][:, 0] @ model.visual.head.proj.weight.T,
                 ref["image_features"])
    with torch.no_grad():
        assert_close("timm_bert txt", model.text.proj(ref["text_last_hidden_state"][:, 0]),
                     ref["text_features"])

    sd = clean_state_dict(model)
    path = os.path.join(out_dir, "open_clip_timm_bert.safetensors")
    st.save_file(sd, path)
    os.chmod(path, 0o644)
    cfg = {
        "embed_dim": EMBED,
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
        "quick_gelu": False,
        "timm_create_model_overrides": TIMM_SMALL_OVERRIDES,
        "hf_text_config": bert_small_config().to_diff_dict(),
        "constructor": "open_clip.model.CustomTextCLIP(embed_dim, vision_cfg, text_cfg) with "
                       "timm.create_model('vit_base_patch16_224', **timm_create_model_overrides) and "
                       "HFTextEncoder built from hf_text_config (AutoModel.from_config(..., "
                       "add_pooling_layer=False))",
        "open_clip_version": open_clip.__version__, "timm_version": timm.__version__,
    }
    with open(os.path.join(out_dir, "open_clip_timm_bert.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    fresh, _, _ = build_timm_bert(4242)
    fresh.load_state_dict(st.load_file(path), strict=True)
    re = timm_bert_forward(fresh, pv, text)
    for k in ref:
        assert_close(f"timm_bert reload {k}", re[k], ref[k], atol=1e-6, rtol=1e-6)

    desc = save_npz(os.path.join(out_dir, "open_clip_timm_bert_io.npz"),
                    dict(pixel_values=pv, text=text, **ref))
    MANIFEST["open_clip_timm_bert"] = {
        "files": ["open_clip_timm_bert.safetensors", "open_clip_timm_bert.json",
                  "open_clip_timm_bert_io.npz"],
        "library": f"open_clip_torch=={open_clip.__version__} CustomTextCLIP, timm=={timm.__version__}, "
                   f"transformers=={transformers.__version__}",
        "reduced_config": cfg,
        "weight_keys": {k: list(v.shape) for k, v in sd.items()},
        "arrays": desc,
        "conventions": {
            "pixel_values": "NCHW float32 random N(0,1)",
            "text": f"int64 [B,{CTX}] rows [CLS={BERT_CLS}, ids in [5,{VOCAB}), SEP={BERT_SEP}, PAD=0...]; "
                    "HFTextEncoder builds attention_mask = (text != pad_token_id=0); token_type_ids "
                    "default zeros",
            "vision": "timm VisionTransformer: patch_embed.proj conv WITH bias, cls_token [1,1,W], pos_embed "
                      "[1,1+patches,W] (CLS row first), blocks.N.{norm1,attn.qkv (packed, bias),attn.proj,norm2,"
                      "mlp.fc1,mlp.fc2}, final norm (eps 1e-6) applied to all tokens, CLS token pooled "
                      "(timm_pool '' keeps timm default 'token'), no fc_norm, exact GELU; "
                      "then visual.head.proj Linear(W, embed, bias=False)",
            "text_tower": "HF BertModel without pooler (text.transformer.*), CLS pooling of last_hidden_state "
                    "(cls_last_hidden_state_pooler), text.proj = Sequential(Linear(W,(W+E)//2,bias=False), "
                    "GELU (exact), Linear((W+E)//2,E,bias=False)) -> keys text.proj.0.weight, text.proj.2.weight",
            "image_features/text_features": "unnormalised; *_normalized are L2-normalised",
            "logit_scale": "RAW parameter, shape []; logits_per_image = exp(logit_scale) * img_n @ txt_n.T",
            "vision_trunk_norm_tokens": "[B, 1+patches, W] output of visual.trunk.norm",
            "text_last_hidden_state": "[B, L, W] BertModel last_hidden_state",
        },
    }


# --------------------------------------------------------------------------
# 6. full-size name/shape maps on the meta device
# --------------------------------------------------------------------------

def shapes(model: nn.Module) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def make_fullsize_keys(out_dir: str):
    res: dict = {}
    notes: dict = {}

    # open_clip ViT-B-16 (open_clip/model_configs/ViT-B-16.json); OpenAI weights use quick_gelu
    vb16 = open_clip.get_model_config("ViT-B-16")
    with torch.device("meta"):
        m = CLIP(**vb16, quick_gelu=True)
    res["open_clip_ViT-B-16"] = shapes(m)
    notes["open_clip_ViT-B-16"] = {
        "config": vb16,
        "note": "open_clip.model.CLIP(**ViT-B-16.json). attn_mask is a non-persistent buffer (absent). "
                "quick_gelu does not change keys. Some published checkpoints (OpenAI JIT / hf-hub) "
                "may carry extra entries; this is the open_clip 3.3.0 state_dict.",
    }
    del m

    # transformers openai/clip-vit-base-patch16
    clip_cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                         hidden_act="quick_gelu", pad_token_id=1, bos_token_id=49406,
                         eos_token_id=2, projection_dim=512),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=16,
                           hidden_act="quick_gelu", projection_dim=512),
        projection_dim=512)
    with torch.device("meta"):
        m = CLIPModel(clip_cfg)
    res["hf_clip_vit_base_patch16"] = shapes(m)
    notes["hf_clip_vit_base_patch16"] = {
        "config": {"text": {k: getattr(clip_cfg.text_config, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "max_position_embeddings", "hidden_act", "eos_token_id")},
            "vision": {k: getattr(clip_cfg.vision_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "image_size", "patch_size", "hidden_act")},
            "projection_dim": 512},
        "note": "openai/clip-vit-base-patch16 as written from knowledge of its published config "
                "(eos_token_id=2 in the hub config -> argmax pooling). Older hub checkpoints also "
                "contain text_model.embeddings.position_ids [1,77] and vision_model.embeddings.position_ids "
                "[1,197] int64 buffers, which transformers now registers non-persistent; loaders should "
                "ignore them.",
    }
    del m

    def siglip_cfg(image_size):
        return SiglipConfig(
            text_config=dict(vocab_size=32000, hidden_size=1152, intermediate_size=4304,
                             num_hidden_layers=27, num_attention_heads=16,
                             max_position_embeddings=64),
            vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                               num_attention_heads=16, image_size=image_size, patch_size=14))

    for name, size in (("hf_siglip_so400m_patch14_384", 384), ("hf_medsiglip_448", 448)):
        cfg = siglip_cfg(size)
        with torch.device("meta"):
            m = SiglipModel(cfg)
        res[name] = shapes(m)
        notes[name] = {"config": {
            "text": {k: getattr(cfg.text_config, k) for k in (
                "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "projection_size")},
            "vision": {k: getattr(cfg.vision_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "image_size", "patch_size")}}}
        del m
    notes["hf_siglip_so400m_patch14_384"]["note"] = (
        "google/siglip-so400m-patch14-384 from knowledge of its hub config: vision/text hidden 1152, "
        "27 layers, 16 heads, intermediate 4304, patch 14, image 384 (27x27=729 patches), "
        "text vocab 32000 and 64 positions (SiglipTextConfig defaults), projection_size = hidden (1152).")
    notes["hf_medsiglip_448"]["note"] = (
        "UNVERIFIED (no hub access here): google/medsiglip-448 is described publicly as the SigLIP-400M "
        "(so400m) dual encoder at 448x448 with up to 64 text tokens; this map ASSUMES the so400m "
        "config with image_size 448 (32x32=1024 patches) and the so400m text tower (vocab 32000, "
        "64 positions). The text vocab size in particular is not confirmed; only the "
        "text_model.embeddings.token_embedding.weight and vision position_embedding shapes depend on "
        "these assumptions.")

    # BiomedCLIP: open_clip CustomTextCLIP (timm ViT-B/16 trunk + HF PubMedBERT text)
    vision_cfg, text_cfg = biomedclip_cfgs(224, 256)
    bert_cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072,
                          max_position_embeddings=512, type_vocab_size=2, pad_token_id=0)
    with patched_open_clip(bert_cfg), torch.device("meta"):
        m = CustomTextCLIP(embed_dim=512, vision_cfg=vision_cfg, text_cfg=text_cfg)
    res["open_clip_biomedclip"] = shapes(m)
    notes["open_clip_biomedclip"] = {
        "config": {"embed_dim": 512, "vision_cfg": vision_cfg, "text_cfg": text_cfg,
                   "hf_text_config": {k: getattr(bert_cfg, k) for k in (
                       "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size", "max_position_embeddings", "type_vocab_size",
                       "pad_token_id")}},
        "note": "Built with real open_clip CustomTextCLIP / TimmModel / HFTextEncoder code; the HF "
                "config of microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract was not downloadable and "
                "was replaced by a locally built BertConfig (vocab 30522, 768, 12 layers, 12 heads, 3072, "
                "512 positions) via a monkeypatched open_clip.hf_model.AutoConfig. hf_model_pretrained "
                "False -> BertModel(add_pooling_layer=False), so no text.transformer.pooler.* keys. The "
                "published checkpoint (open_clip_pytorch_model.bin) may additionally contain "
                "text.transformer.embeddings.position_ids [1,512], which open_clip.load_checkpoint drops.",
    }
    del m

    with open(os.path.join(out_dir, "fullsize_keys.json"), "w") as f:
        json.dump(res | {"notes": notes}, f, separators=(",", ":"))
    MANIFEST["fullsize_keys"] = {
        "files": ["fullsize_keys.json"],
        "content": "{model_name: {state_dict_key: shape list}} for " + ", ".join(res) +
                   "; plus 'notes' {model_name: {config, note}}. Built on the meta device (no weights).",
        "num_keys": {k: len(v) for k, v in res.items()},
    }


# --------------------------------------------------------------------------


def make_resample(out_dir: str):
    """Position grids resized as the libraries resize position embeddings: F.interpolate
    bicubic, align_corners=False, without antialias (transformers' interpolate_pos_encoding)
    and with it (open_clip's resize_pos_embed, timm's resample_abs_pos_embed)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name, (g, h) in {"up": (4, 6), "down": (6, 4), "odd": (5, 7)}.items():
        grid = torch.from_numpy(rng.normal(size=(1, WIDTH, g, g)).astype(np.float32))
        arrays[f"{name}_in"] = grid.numpy()
        for key, aa in (("bicubic", False), ("bicubic_aa", True)):
            arrays[f"{name}_{key}"] = torch.nn.functional.interpolate(
                grid, size=(h, h), mode="bicubic", align_corners=False, antialias=aa).numpy()
    desc = save_npz(os.path.join(out_dir, "resample_io.npz"), arrays)
    MANIFEST["resample"] = {"files": ["resample_io.npz"], "arrays": desc,
                            "conventions": {"layout": "[1, D, g, g] in, [1, D, h, h] out"}}


TOKENIZER_TEXTS = [
    "No acute cardiopulmonary abnormality.",
    "Small LEFT pleural effusion; heart size normal. Don't miss the 3 mm nodule!",
    "Moderate cardiomegaly with pulmonary edema, worse than 2024-01-05 (see prior)",
    "",
]


def make_clip_tokenizer(out_dir: str, merges_kept: int = 4000):
    """CLIP's BPE at a reduced vocabulary (open_clip's own merges file, cut to its first
    `merges_kept` merges) as the tokenizer.json transformers' CLIPTokenizer builds, and the
    ids open_clip.tokenize gives fixed texts with it (context 16, so one text is cut)."""
    import gzip
    import tempfile

    from open_clip.tokenizer import SimpleTokenizer, default_bpe
    from transformers import CLIPTokenizer
    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1:merges_kept + 1]
    with tempfile.TemporaryDirectory() as tmp:
        bpe = os.path.join(tmp, "bpe.txt.gz")
        with gzip.open(bpe, "wt", encoding="utf-8") as f:
            f.write("\n".join([lines[0], *merges, ""]))
        reference = SimpleTokenizer(bpe_path=bpe, context_length=CTX)
        vocab = dict(reference.encoder)
        vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
        vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
        hf = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
        hf.backend_tokenizer.save(os.path.join(out_dir, "clip_tokenizer.json"))
        ids = reference(TOKENIZER_TEXTS, context_length=CTX).numpy()
        hf_ids = [hf(text)["input_ids"] for text in TOKENIZER_TEXTS]
    for row, text_ids in zip(ids, hf_ids, strict=True):  # they agree before truncation
        assert list(row[:min(len(text_ids), CTX)])[:-1] == text_ids[:min(len(text_ids), CTX)][:-1]
    desc = save_npz(os.path.join(out_dir, "clip_tokenizer_io.npz"),
                    {"ids": ids.astype(np.int64)})
    MANIFEST["clip_tokenizer"] = {
        "files": ["clip_tokenizer.json", "clip_tokenizer_io.npz"], "arrays": desc,
        "texts": TOKENIZER_TEXTS, "vocab_size": len(vocab), "merges_kept": merges_kept,
        "conventions": {"ids": f"open_clip.tokenize(texts, context_length={CTX}): sot, "
                               "tokens, eot, zeros; a text longer than the context is cut "
                               "and its last id set to eot"}}


SIGLIP_TEXTS = [
    "No acute cardiopulmonary abnormality.",
    "Small LEFT pleural effusion; heart size normal. Don't miss the 3 mm nodule!",
    "  Moderate   cardiomegaly,\twith\n pulmonary edema (see prior)  ",
    "Résumé: naïve ﬁbrosis — ＡＢＣ！ 2024-01-05 ½ dose",
    "CT-guided biopsy [L1/L2]: #benign, 100% {clear} ~ <ok> | 'quoted' \"double\"",
    "\u2581 leading underline \u2581\u2581 and ✓ emoji 🫁 lungs",
    "",
    "...!!!",
    "a",
]
SPM_CORPUS = [
    "no acute cardiopulmonary abnormality", "small left pleural effusion heart size normal",
    "moderate cardiomegaly with pulmonary edema worse than prior", "the lungs are clear",
    "ct guided biopsy of the liver lesion benign", "fibrosis at both bases resume dose",
    "no pneumothorax no consolidation", "3 mm nodule in the right upper lobe",
    "naive patient follow up in 6 months", "abc 2024 01 05 one half dose",
]


def make_siglip_tokenizer(out_dir: str):
    """Two small SentencePiece unigram models with SigLIP's special ids (pad 0, </s> 1,
    <unk> 2, no <s>): one with nmt_nfkc normalisation (as SigLIP's), one with byte fallback
    and no normalisation; and the ids transformers' SiglipTokenizer gives fixed texts with
    each (lower-cased, punctuation stripped, </s> appended, context 16, padded with </s>)."""
    import tempfile

    import sentencepiece as spm
    from transformers import SiglipTokenizer
    variants = {"siglip_spiece": dict(normalization_rule_name="nmt_nfkc", vocab_size=120,
                                      character_coverage=0.995),
                "spm_bytes": dict(normalization_rule_name="identity", vocab_size=300,
                                  byte_fallback=True, character_coverage=0.995)}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(SPM_CORPUS * 20) + "\n")
        arrays = {}
        for name, options in variants.items():
            prefix = os.path.join(out_dir, name)
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, model_type="unigram", pad_id=0, eos_id=1,
                unk_id=2, bos_id=-1, num_threads=1, hard_vocab_limit=False, **options)
            os.remove(prefix + ".vocab")
            hf = SiglipTokenizer(vocab_file=prefix + ".model")
            ids = hf(SIGLIP_TEXTS, max_length=CTX, truncation=True,
                     padding="max_length")["input_ids"]
            arrays[f"{name}_ids"] = np.asarray(ids, np.int64)
            full = hf(SIGLIP_TEXTS)["input_ids"]
            width = max(map(len, full))
            arrays[f"{name}_full_ids"] = np.asarray(
                [row + [hf.pad_token_id] * (width - len(row)) for row in full], np.int64)
    desc = save_npz(os.path.join(out_dir, "siglip_tokenizer_io.npz"), arrays)
    MANIFEST["siglip_tokenizer"] = {
        "files": [f"{n}.model" for n in variants] + ["siglip_tokenizer_io.npz"],
        "arrays": desc, "texts": SIGLIP_TEXTS, "trainer_options": variants,
        "conventions": {"ids": f"SiglipTokenizer(vocab_file)(texts, max_length={CTX}, "
                               "truncation=True, padding='max_length'); *_full_ids: without "
                               "truncation, right-padded with </s> to the longest"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/interop")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="fixture names to skip (hf_clip open_clip_vit hf_siglip hf_bert "
                         "open_clip_timm_bert fullsize_keys resample clip_tokenizer "
                         "siglip_tokenizer); the manifest keeps the entries of skipped ones")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.set_grad_enabled(False)
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):  # entries of the fixtures this run skips stay
        with open(manifest) as f:
            MANIFEST.update(json.load(f))

    steps = [("hf_clip", make_hf_clip), ("open_clip_vit", make_open_clip_vit),
             ("hf_siglip", make_hf_siglip), ("hf_bert", make_hf_bert),
             ("open_clip_timm_bert", make_open_clip_timm_bert),
             ("fullsize_keys", make_fullsize_keys), ("resample", make_resample),
             ("clip_tokenizer", make_clip_tokenizer),
             ("siglip_tokenizer", make_siglip_tokenizer)]
    for name, fn in steps:
        if name in args.skip:
            continue
        print(f"[make_interop_fixtures] {name} ...", flush=True)
        fn(out)

    MANIFEST["_meta"] = {
        "generator": "tools/make_interop_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "open_clip_torch": open_clip.__version__, "timm": timm.__version__,
                     "numpy": np.__version__},
        "shared_reduced_sizes": dict(batch=B, image_size=IMG, patch_size=PATCH, width=WIDTH,
                                     layers=LAYERS, heads=HEADS, mlp_hidden=MLP, embed_dim=EMBED,
                                     context_length=CTX, vocab_size=VOCAB,
                                     text_real_lengths=TEXT_LENGTHS),
        "weights": f"random init (torch.manual_seed) + N(0,{NOISE_STD}) noise on every float parameter; "
                   "all float32",
        "pixel_layout": "NCHW",
        "reload_check": "every safetensors file was reloaded into a fresh model (strict) and "
                        "reproduced all arrays to 1e-6",
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(MANIFEST, f, indent=1)

    total = 0
    for root, _, files in os.walk(out):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            os.chmod(p, 0o644)
            total += file_size(p)
            print(f"  {os.path.relpath(p, out):45s} {file_size(p):>9d} B")
    print(f"  total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
