"""A small reader of serialized `tf.train.Example` protocol buffers, without TensorFlow or protobuf.

TFF stores its current data sets (EMNIST's `emnist_all.sqlite`, ...) as rows of
serialized `tf.train.Example`s. The message is small and fixed
(`tensorflow/core/example/{example,feature}.proto`)::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }   // entries: key = 1, value = 2
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

so it is decoded here from the protobuf wire format directly. Packed and
unpacked repeated fields are both read (a parser must accept either), and
unknown fields are skipped, as protobuf does.

```python
>>> from fedcore.data._example_proto import parse_example
>>> # Example{features{feature{key: "label" value{int64_list{value: [7]}}}}}
>>> parse_example(bytes.fromhex("0a100a0e0a056c6162656c12051a030a0107"))
{'label': array([7])}
```
"""

from __future__ import annotations

import numpy as np

__all__ = ["parse_example", "MalformedExampleError"]

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class MalformedExampleError(ValueError):
    """Bytes that are not a serialized `tf.train.Example`."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise MalformedExampleError("a varint runs past the end of the message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedExampleError("a varint is longer than 10 bytes")


def _fields(buf: bytes):
    """Yields `(field_number, wire_type, value)`: an int for varints, bytes for the other wire types."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == _LENGTH:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise MalformedExampleError(f"unsupported wire type {wire} (field {number})")
        if pos > len(buf):
            raise MalformedExampleError(f"field {number} runs past the end of the message")
        yield number, wire, value


def _signed64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _floats(buf: bytes) -> np.ndarray:
    parts = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _LENGTH:  # packed
            if len(value) % 4:
                raise MalformedExampleError("a packed float list's length is not a multiple of 4")
            parts.append(np.frombuffer(value, dtype="<f4"))
        elif wire == _FIXED32:
            parts.append(np.frombuffer(value, dtype="<f4"))
        else:
            raise MalformedExampleError(f"a float list holds wire type {wire}")
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _int64s(buf: bytes) -> np.ndarray:
    values: list[int] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _LENGTH:  # packed
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                values.append(_signed64(v))
        elif wire == _VARINT:
            values.append(_signed64(value))
        else:
            raise MalformedExampleError(f"an int64 list holds wire type {wire}")
    return np.array(values, dtype=np.int64)


def _bytes_list(buf: bytes) -> np.ndarray:
    return np.array([bytes(v) for n, w, v in _fields(buf) if n == 1 and w == _LENGTH], dtype=object)


_KINDS = {1: _bytes_list, 2: _floats, 3: _int64s}


def _feature(buf: bytes) -> np.ndarray:
    value = None
    for number, wire, payload in _fields(buf):
        if number in _KINDS and wire == _LENGTH:
            value = _KINDS[number](payload)  # oneof: the last one wins, as in protobuf
    return np.zeros(0, np.float32) if value is None else value  # an empty Feature: no values


def parse_example(serialized: bytes) -> dict[str, np.ndarray]:
    """`bytes -> {name: 1-D array}`: one serialized `tf.train.Example`'s features.

    Float lists come back as float32, int64 lists as int64 and bytes lists as
    object arrays of `bytes`, each flat (callers reshape: a `(28, 28)` image is
    stored as 784 floats).

    Raises:
        MalformedExampleError: the bytes are not a serialized `tf.train.Example`.
    """
    features: dict[str, np.ndarray] = {}
    for number, wire, payload in _fields(bytes(serialized)):
        if number != 1 or wire != _LENGTH:
            continue
        for n, w, entry in _fields(payload):
            if n != 1 or w != _LENGTH:
                continue
            key, value = None, None
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == _LENGTH:
                    key = ev.decode("utf-8")
                elif en == 2 and ew == _LENGTH:
                    value = _feature(ev)
            if key is None:
                raise MalformedExampleError("a feature map entry has no key")
            features[key] = value if value is not None else np.zeros(0, np.float32)
    return features
