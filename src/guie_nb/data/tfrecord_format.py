"""TFRecord files and `tf.train.Example` messages in plain Python, without importing TensorFlow.

Data-prep workers write whole shards; importing TensorFlow in each of them would cost seconds and
hundreds of MB per core. The formats are small: a record is `uint64 length, masked crc32c of the
length, data, masked crc32c of the data`; an Example is a protobuf map of named bytes/int64/float
lists. Files written here are read by `tf.data.TFRecordDataset` and `tf.io.parse_single_example`
(the tests check it), and Model Garden's ImageNet shards are read here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c


class RecordError(ValueError):
    """A TFRecord file is truncated or fails its checksum at some record."""


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    header = struct.pack("<Q", len(record))
    return b"".join((header, struct.pack("<I", masked_crc(header)), record, struct.pack("<I", masked_crc(record))))


class AtomicWriter:
    """Writes records to a hidden temporary file; `commit()` renames it to the final name.

    A run killed mid-shard leaves only the temporary file, never a partial file under the final
    name (resume removes the leftovers).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.tmp.open("wb")
        self.bytes = 0

    def write(self, record: bytes) -> None:
        data = frame(record)
        self._f.write(data)
        self.bytes += len(data)

    def write_framed(self, data: bytes) -> None:
        self._f.write(data)
        self.bytes += len(data)

    def commit(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def iter_records(path: str | Path, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """`(offset, record)` for each record; RecordError at the first truncated or corrupt one."""
    with Path(path).open("rb") as f:
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            yield offset, _read_body(f, header, path, offset, verify)


def read_record(path: str | Path, offset: int, verify: bool = True) -> bytes:
    with Path(path).open("rb") as f:
        f.seek(offset)
        return _read_body(f, f.read(12), path, offset, verify)


def _read_body(f, header: bytes, path, offset: int, verify: bool) -> bytes:
    if len(header) < 12:
        raise RecordError(f"{path}: truncated record header at byte {offset}")
    (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
    if verify and masked_crc(header[:8]) != crc:
        raise RecordError(f"{path}: corrupt record length at byte {offset}")
    data, footer = f.read(length), f.read(4)
    if len(data) < length or len(footer) < 4:
        raise RecordError(f"{path}: truncated record at byte {offset}")
    if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
        raise RecordError(f"{path}: record checksum mismatch at byte {offset}")
    return data


# --- tf.train.Example ------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes | int | list]) -> bytes:
    """Serialise {name: bytes | int | list of either} as a tf.train.Example (keys in sorted order)."""
    entries = []
    for key in sorted(features):
        values = features[key]
        values = values if isinstance(values, list) else [values]
        if all(isinstance(v, (bytes, bytearray)) for v in values):
            feature = _len_field(1, b"".join(_len_field(1, bytes(v)) for v in values))  # BytesList
        elif all(isinstance(v, int) for v in values):
            feature = _len_field(3, _len_field(1, b"".join(_varint(v) for v in values)))  # Int64List, packed
        else:
            raise TypeError(f"feature {key!r}: values must all be bytes or all int, got {values!r:.80}")
        entries.append(_len_field(1, _len_field(1, key.encode()) + _len_field(2, feature)))
    return _len_field(1, b"".join(entries))


def _read_varint(buf: memoryview, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
            if len(value) < n:
                raise ValueError("truncated field")
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, value


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def decode_example(data: bytes) -> dict[str, list]:
    """A tf.train.Example as {name: list of bytes | int | float}; ValueError when malformed."""
    out: dict[str, list] = {}
    for num, _, features in _fields(memoryview(data)):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            key, values = "", []
            for enum, _, ev in _fields(entry):
                if enum == 1:
                    key = bytes(ev).decode()
                elif enum == 2:
                    values = _feature_values(ev)
            out[key] = values
    return out


def _feature_values(feature: memoryview) -> list:
    values: list = []
    for kind, _, lst in _fields(feature):
        for vnum, wire, v in _fields(lst):
            if vnum != 1:
                continue
            if kind == 1:
                values.append(bytes(v))
            elif kind == 2:
                values += [x for (x,) in struct.iter_unpack("<f", bytes(v))] if wire == 2 else \
                    [struct.unpack("<f", bytes(v))[0]]
            elif kind == 3:
                if wire == 2:
                    j = 0
                    while j < len(v):
                        n, j = _read_varint(v, j)
                        values.append(_signed(n))
                else:
                    values.append(_signed(v))
    return values
