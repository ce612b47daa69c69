"""Small helpers shared by the fixture generators in tools/.

`save_deterministic` writes a .safetensors file with `safetensors.torch.save_file`
and then rewrites its JSON header so the `__metadata__` keys are sorted.
(safetensors serialises metadata from a Rust HashMap, so its key order -- and
therefore the file bytes -- would otherwise change from run to run.)
Only the header is touched; tensor bytes and data offsets are unchanged.
"""

import json
import os
import struct

from safetensors.torch import save_file


def _canonicalize_header(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen].decode("utf-8"))
    body = raw[8 + hlen :]
    out = {}
    if "__metadata__" in header:
        out["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    # tensors in data-offset order (save_file's own deterministic order)
    for k, v in sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[0])):
        out[k] = v
    hbytes = json.dumps(out, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        f.write(body)
    os.chmod(path, 0o644)


def save_deterministic(tensors, path, metadata):
    assert all(isinstance(v, str) for v in metadata.values()), metadata
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    _canonicalize_header(path)
