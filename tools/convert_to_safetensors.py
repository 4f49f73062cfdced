"""Convert a pickled PyTorch checkpoint (.bin, .pt, .pth) to safetensors, which is all
mmjax reads. Run it in an environment that has torch (mmjax itself never unpickles):

    python tools/convert_to_safetensors.py open_clip_pytorch_model.bin [--out model.safetensors]

`torch.load(weights_only=True)` refuses anything but tensors and plain containers, so a
malicious pickle cannot run code here either. A {"state_dict": ...} wrapper (Lightning,
some open_clip releases) and a "module." prefix (DDP) are unwrapped.
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file


def state_dict(path: Path) -> dict:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    loaded = loaded.get("state_dict", loaded)
    return {name.removeprefix("module."): tensor.contiguous().clone()
            for name, tensor in loaded.items() if isinstance(tensor, torch.Tensor)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, help="default: the checkpoint's name + .safetensors")
    args = parser.parse_args()
    out = args.out or args.checkpoint.with_suffix(".safetensors")
    tensors = state_dict(args.checkpoint)
    save_file(tensors, str(out))
    print(f"wrote {len(tensors)} tensors to {out}")


if __name__ == "__main__":
    main()
