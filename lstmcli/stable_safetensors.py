"""Safetensors bytes that depend on the tensors alone.

``safetensors.torch.save`` writes the ``__metadata__`` table from a Rust hash map, whose order
changes from one process to the next, so two identical trainings wrote different bytes and a
checksum could not verify a model. Here the header is built with every key in a fixed order
(metadata sorted, tensors by name), in the layout the safetensors format defines: an 8-byte
little-endian header length, the JSON header padded with spaces to a multiple of 8 bytes, then
the tensors' raw little-endian bytes back to back. Any safetensors reader loads it.
"""

from __future__ import annotations

import json
import struct

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def stable_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors encoding of ``tensors`` and ``metadata``, byte-identical for equal
    inputs whatever the order of either mapping."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors lacks")
        # Through uint8 so that every dtype (bfloat16 included) gives its raw bytes.
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data must start 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
