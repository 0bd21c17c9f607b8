"""What travels between the inspector's page and its server: answers as compact JSON
(NumPy arrays as shape and base64 data, NumPy scalars as numbers, NaN and infinity as
null) and the checks of a request's body, each failure a ``RequestError`` with its status
and a one-line message."""

import base64
import binascii
import json
import math

import numpy as np

__all__ = [
    "RequestError",
    "body_input",
    "dumps",
    "encode_array",
    "file_name",
    "optional_int",
    "to_json",
]


class RequestError(Exception):
    """A request to refuse with ``status`` and a one-line ``message``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def encode_array(a):
    """A NumPy array as JSON: shape and little-endian base64 data (uint8 stays uint8,
    everything else float32, which is plenty for drawing; exact values travel as numbers)."""
    a = np.asarray(a)
    kind = "uint8" if a.dtype == np.uint8 else "float32"
    data = np.ascontiguousarray(a, dtype="<u1" if kind == "uint8" else "<f4").tobytes()
    return {"shape": list(a.shape), kind: base64.b64encode(data).decode("ascii")}


def to_json(value):
    """``value`` with arrays encoded, NumPy scalars as numbers and NaN or infinity as None."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _plain(value):
    """``json.dumps``'s ``default``: NumPy's types as ``to_json`` converts them."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):  # float16 and float32 (float64 is a Python float)
        return float(value) if math.isfinite(value) else None
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def dumps(value):
    """``to_json(value)`` as compact JSON bytes. json's C encoder meets NumPy's types as
    they come; the recursive walk, a third of the server's CPU for a live page, is taken
    only when a float is not finite (or a key not a string), which it turns into null.
    (Keys True, False and None, which no answer has, would read "true" where the walk
    writes "True".)"""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain)
    except (ValueError, TypeError):
        text = json.dumps(to_json(value), separators=(",", ":"), allow_nan=False)
    return text.encode()


#: Longest upload name kept for error messages.
NAME_LENGTH = 120


def file_name(body):
    """The uploaded file's ``name`` from a request body, made safe for a one-line message
    (its last path component, control characters dropped, shortened); None if absent."""
    name = body.get("name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise RequestError(400, f"'name' must be a string (the file's name), got {name!r:.40}")
    name = "".join(ch for ch in name.replace("\\", "/").rsplit("/", 1)[-1] if ch.isprintable())
    name = " ".join(name.split())
    if len(name) > NAME_LENGTH:
        name = name[: NAME_LENGTH - 3] + "..."
    return name or None


def body_input(body, size=784):
    """The keyword arguments of ``Inspector.digit`` from a request body; ``size``: the
    number of pixels of the model's input (C x H x W)."""
    keys = {"image", "pixels", "test_index"} & set(body)
    if len(keys) != 1:
        raise RequestError(400, "give exactly one of 'image', 'pixels' or 'test_index'")
    (key,) = keys
    value = body[key]
    if key == "image":
        name = file_name(body)
        about = f"{name}: " if name else ""
        if not isinstance(value, str):
            raise RequestError(400, f"{about}'image' must be a base64 string or a data: URL")
        if value.startswith("data:"):
            value = value.partition(",")[2]
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{about}'image' is not valid base64") from None
        if not value:
            raise RequestError(400, f"{about}'image' is empty (the file has no bytes)")
        return {"image": value, "name": name}
    if key == "pixels" and not (
        isinstance(value, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise RequestError(400, f"'pixels' must be a list of {size} numbers 0-255")
    return {"pixels" if key == "pixels" else "test_index": value}


def optional_int(body, key):
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{key}' must be an integer, got {value!r:.40}")
    return value
