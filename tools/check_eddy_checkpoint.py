"""Checks that an eddy-saved model file loads into PyTorch and computes what eddy computed.

Usage: python3 tools/check_eddy_checkpoint.py [fixtures/eddy/seed_model.safetensors]

The file (written by `cargo test -p eddy-nn --test nn interop:: -- --ignored`) holds an eddy
`Sequential` model's parameters under their dotted names (`layers.0.weight_ih_l0`, ...), an
`input` [N, T, F] and eddy's `output`, and in its metadata the layer spec, e.g.
`lstm 5 seq;lstm 4 seq;dense 2`. The script builds the same stack from torch.nn modules in a
ModuleList called `layers`, so the state-dict names match, loads the parameters with
`load_state_dict(strict=True)`, runs the input, and compares with eddy's output. Needs torch;
CI does not run it.
"""

import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file


class Stack(torch.nn.Module):
    def __init__(self, spec, features):
        super().__init__()
        self.kinds = []
        layers = []
        for part in spec.split(";"):
            kind, units, *rest = part.split()
            units = int(units)
            if kind in ("lstm", "gru", "rnn"):
                cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
                layers.append(cls(features, units, batch_first=True))
                self.kinds.append(("rec", rest == ["seq"]))
            elif kind == "dense":
                layers.append(torch.nn.Linear(features, units))
                self.kinds.append(("dense", None))
            else:
                raise ValueError(f"unknown layer {part!r}")
            features = units
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x):
        for layer, (kind, seq) in zip(self.layers, self.kinds):
            if kind == "rec":
                out, _ = layer(x)
                x = out if seq else out[:, -1, :]
            else:
                x = layer(x)
        return x


def main(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    model = Stack(meta["spec"], int(meta["input_features"])).double()
    state = {k: v for k, v in tensors.items() if k.startswith("layers.")}
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(tensors["input"].double())
    err = (out - tensors["output"]).abs().max().item()
    print(f"{path}: {len(state)} tensors loaded strictly; max |torch - eddy| = {err:.3e}")
    if err > 1e-10:
        sys.exit(f"MISMATCH: {err}")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/eddy/seed_model.safetensors")
