"""Read and write the safetensors file layout without the ``safetensors`` package.

The Science Pipelines' ``rubin-env`` does not ship ``safetensors``, so model
packages use this small codec instead.  The layout is the documented one:

* 8 bytes: little-endian unsigned length ``N`` of the header;
* ``N`` bytes: a UTF-8 JSON object mapping each tensor name to
  ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets
  relative to the end of the header), plus an optional ``"__metadata__"``
  object of string values; padded with spaces to a multiple of 8 bytes;
* the tensors' raw little-endian bytes, back to back.

Files written here are read by the ``safetensors`` package and the other way
round (tested).  Reading parses JSON and copies raw bytes into tensors:
nothing in a file is executed, and every offset is checked against the
file before any byte is used.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .errors import MeasMlUserError

__all__ = ["SafetensorsError", "decode", "encode", "read_header"]

#: safetensors dtype code -> torch dtype.
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES: dict[torch.dtype, str] = {v: k for k, v in _DTYPES.items()}

#: Largest header accepted (the format's own limit is 100 MB).
_MAX_HEADER = 100_000_000


class SafetensorsError(MeasMlUserError, ValueError):
    """The bytes are not a well-formed safetensors file."""


def encode(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise named tensors (and string metadata) to safetensors bytes.

    Tensors are written in sorted name order, each as contiguous
    little-endian bytes.

    Parameters
    ----------
    tensors : `~collections.abc.Mapping` [`str`, `torch.Tensor`]
        The tensors, by name (moved to the CPU for writing).
    metadata : `~collections.abc.Mapping` [`str`, `str`], optional
        String metadata, stored as ``__metadata__`` in the header.

    Returns
    -------
    data : `bytes`
        The safetensors file content.

    Raises
    ------
    SafetensorsError
        If the metadata are not strings, or a tensor's dtype is not
        supported.
    """
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("safetensors metadata must map strings to strings.")
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in _CODES:
            raise SafetensorsError(f"tensor {name!r} has unsupported dtype {tensor.dtype}.")
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _CODES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """Parse the JSON header of safetensors bytes.

    Parameters
    ----------
    data : `bytes`
        The safetensors file content.

    Returns
    -------
    header : `dict` [`str`, `~typing.Any`]
        The parsed JSON header.
    start : `int`
        The offset at which tensor data starts.

    Raises
    ------
    SafetensorsError
        If the data are too short, the header length is out of range, or the
        header is not a JSON object.
    """
    if len(data) < 8:
        raise SafetensorsError(f"{len(data)} bytes is too short for a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8 or length > _MAX_HEADER:
        raise SafetensorsError(f"header length {length} exceeds the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    return header, 8 + length


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Decode tensors and metadata from safetensors bytes.

    Parameters
    ----------
    data : `bytes`
        The safetensors file content.

    Returns
    -------
    tensors : `dict` [`str`, `torch.Tensor`]
        The tensors, by name.
    metadata : `dict` [`str`, `str`]
        The ``__metadata__`` of the header (empty if absent).

    Raises
    ------
    SafetensorsError
        For a malformed header, an unknown dtype, a shape that does not
        match its byte range, or a byte range outside the file.
    """
    header, start = read_header(data)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise SafetensorsError("__metadata__ is not a JSON object")
    body = memoryview(data)[start:]
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in header.items():
        try:
            dtype = _DTYPES[spec["dtype"]]
            shape = [int(s) for s in spec["shape"]]
            begin, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SafetensorsError(f"tensor {name!r} has a malformed entry {spec!r} ({exc})") from None
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(body):
            raise SafetensorsError(f"tensor {name!r}: shape {shape} or byte range {begin}-{end} is invalid")
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * itemsize != end - begin:
            raise SafetensorsError(
                f"tensor {name!r}: {end - begin} bytes do not hold shape {shape} of {spec['dtype']}"
            )
        raw = bytearray(body[begin:end])
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtype).reshape(shape).clone()
    return tensors, {str(k): str(v) for k, v in metadata.items()}
