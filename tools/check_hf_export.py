"""Load an `mmjax export --format hf` folder in transformers and compare its embeddings
with reference ones. Run where torch is installed (the venv of make_interop_fixtures.py):

    python tools/check_hf_export.py EXPORTED_FOLDER REFERENCE.npz

REFERENCE.npz holds `pixel_values` [B, C, H, W], `input_ids` (and, for CLIP,
`attention_mask`) [B, L],
and the embeddings mmjax gives for them, `image_embeds` and `text_embeds` (L2-normalised),
e.g. tests/data/interop/hf_clip_io.npz (hf_siglip_io.npz) for an import of
tests/data/interop/hf_clip (hf_siglip).
"""

import argparse

import numpy as np
import torch
from transformers import AutoModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("reference")
    args = parser.parse_args()
    model = AutoModel.from_pretrained(args.folder).eval()  # CLIPModel or SiglipModel
    ref = np.load(args.reference)
    inputs = {"pixel_values": torch.from_numpy(ref["pixel_values"]),
              "input_ids": torch.from_numpy(ref["input_ids"])}
    if "attention_mask" in ref:  # SigLIP attends its padding: it takes none
        inputs["attention_mask"] = torch.from_numpy(ref["attention_mask"])
    with torch.no_grad():
        out = model(**inputs)
    for name in ("image_embeds", "text_embeds"):
        error = np.abs(getattr(out, name).numpy() - ref[name]).max()
        print(f"{name}: max abs difference {error:.2e}")


if __name__ == "__main__":
    main()
