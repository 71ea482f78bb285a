"""TFF's current EMNIST format (`emnist_all.sqlite[.lzma]`): read without TensorFlow, equal to the HDF5 files."""

from __future__ import annotations

import lzma
import pickle
import sqlite3
import struct

import numpy as np
import pytest

from fedcore.data import SQLiteClientData
from fedcore.data import _example_proto
from fedcore.data._example_proto import MalformedExampleError, parse_example
from fedcore.data.datasets import emnist
from fedcore.data.download import CorruptArchiveError

from .conftest import WRITERS

DIGITS = "fed_emnist_digitsonly"


# -- an encoder written from the proto definitions, independent of the decoder under test -----------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 values are encoded as their two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(values: np.ndarray, packed: bool = True) -> bytes:
    if values.dtype.kind == "f":
        flat = values.astype("<f4").ravel()
        body = (
            _len_field(1, flat.tobytes())
            if packed
            else b"".join(_varint(1 << 3 | 5) + struct.pack("<f", v) for v in flat)
        )
        return _len_field(2, body)  # Feature.float_list
    ints = [int(v) for v in values.ravel()]
    body = _len_field(1, b"".join(_varint(v) for v in ints)) if packed else b"".join(_varint(1 << 3) + _varint(v) for v in ints)
    return _len_field(3, body)  # Feature.int64_list


def encode_example(features: dict[str, np.ndarray], packed: bool = True) -> bytes:
    entries = b"".join(
        _len_field(1, _len_field(1, k.encode()) + _len_field(2, _feature(np.asarray(v), packed)))
        for k, v in features.items()
    )
    return _len_field(1, entries)  # Example.features = Features{feature: map entries}


def write_tff_sqlite(path, splits: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """TFF's layout: examples(split_name, client_id, serialized_example_proto) + client_metadata."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, serialized_example_proto BLOB NOT NULL)")
    db.execute("CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)")
    for split, clients in splits.items():
        for cid, (pixels, label) in clients.items():
            for i in range(len(label)):
                proto = encode_example({"label": np.array([label[i]], np.int64), "pixels": pixels[i]})
                db.execute("INSERT INTO examples VALUES (?, ?, ?)", (split, cid, proto))
            db.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (cid, split, len(label)))
    db.commit()
    db.close()


@pytest.fixture(scope="module")
def sqlite_source(emnist_source, tmp_path_factory):
    """`emnist_all.sqlite` (and its `.lzma`) holding the same writers as the HDF5 fixtures, all four splits."""
    _, info = emnist_source
    root = tmp_path_factory.mktemp("emnist_sqlite")
    splits = {
        "digits_only_train": info[DIGITS]["train"],
        "digits_only_test": info[DIGITS]["test"],
        "all_train": info["fed_emnist"]["train"],
        "all_test": info["fed_emnist"]["test"],
    }
    path = root / "emnist_all.sqlite"
    write_tff_sqlite(path, splits)
    packed = root / "archive"
    packed.mkdir()
    with lzma.open(packed / "emnist_all.sqlite.lzma", "wb", format=lzma.FORMAT_ALONE) as f:  # TFF's .lzma
        f.write(path.read_bytes())
    return path, packed / "emnist_all.sqlite.lzma", info


# -- the decoder ------------------------------------------------------------------------------------
def test_decoder_reads_the_canonical_bytes_of_an_example():
    # Example{features{feature{key:"label" value{int64_list{value:[7]}}}}}, encoded by hand from the .proto:
    # 0a 10 (features, 16 bytes) 0a 0e (map entry, 14) 0a 05 "label" 12 05 (Feature) 1a 03 (int64_list) 0a 01 07.
    assert parse_example(bytes.fromhex("0a100a0e0a056c6162656c12051a030a0107"))["label"].tolist() == [7]
    assert encode_example({"label": np.array([7], np.int64)}).hex() == "0a100a0e0a056c6162656c12051a030a0107"


@pytest.mark.parametrize("packed", [True, False])
def test_decoder_round_trips_floats_and_signed_ints_packed_or_not(packed):
    rng = np.random.default_rng(0)
    pixels = rng.random((28, 28), dtype=np.float32)
    ints = np.array([0, 1, -1, 2**40, -(2**63), 2**63 - 1], np.int64)
    parsed = parse_example(encode_example({"pixels": pixels, "ids": ints}, packed=packed))
    np.testing.assert_array_equal(parsed["pixels"], pixels.ravel())
    assert parsed["pixels"].dtype == np.float32
    np.testing.assert_array_equal(parsed["ids"], ints)


@pytest.mark.parametrize("bad", [b"\x0a\x10\x0a", b"\x0a\x05\x0a\x03\x0a\x01", b"\x0f", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_decoder_refuses_bytes_that_are_not_an_example(bad):
    with pytest.raises(MalformedExampleError):
        parse_example(bad)


# -- the loader ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("only_digits", [True, False])
def test_sqlite_gives_exactly_the_hdf5_data(sqlite_source, only_digits):
    path, _, info = sqlite_source
    prefix = DIGITS if only_digits else "fed_emnist"
    h5_train, h5_test = emnist.load_data(only_digits, path=info[prefix]["h5dir"])
    sq_train, sq_test = emnist.load_data(only_digits, path=path)
    assert isinstance(sq_train, SQLiteClientData) and sq_train.split_name == ("digits_only_train" if only_digits else "all_train")
    for h5, sq in ((h5_train, sq_train), (h5_test, sq_test)):
        assert sq.client_ids == h5.client_ids == tuple(sorted(WRITERS))
        assert sq.element_spec == h5.element_spec
        for w in WRITERS:
            a, b = h5.dataset(w), sq.dataset(w)
            assert a["x"].dtype == b["x"].dtype == np.float32 and a["y"].dtype == b["y"].dtype == np.int32
            np.testing.assert_array_equal(b["x"], a["x"])
            np.testing.assert_array_equal(b["y"], a["y"])
            assert sq.num_examples(w) == h5.num_examples(w)


def test_invert_and_flatten_apply_to_sqlite_too(sqlite_source):
    path, _, info = sqlite_source
    train, _ = emnist.load_data(path=path, invert=True, flatten=True)
    w = WRITERS[0]
    np.testing.assert_allclose(train.dataset(w)["x"], 1.0 - info[DIGITS]["train"][w][0].reshape(-1, 784))


def test_clients_are_read_lazily(sqlite_source, monkeypatch):
    path, _, info = sqlite_source
    calls = []
    real = _example_proto.parse_example
    monkeypatch.setattr(_example_proto, "parse_example", lambda b: calls.append(1) or real(b))
    train, _ = emnist.load_data(path=path)
    assert len(calls) == 1  # opening reads the ids and one example (for element_spec)
    train.num_examples(WRITERS[1])
    assert len(calls) == 1  # counts come from client_metadata
    train.dataset(WRITERS[1])
    assert len(calls) == 1 + len(info[DIGITS]["train"][WRITERS[1]][1])  # one client's rows, no more


def test_lzma_archive_is_decompressed_into_the_cache_once(sqlite_source, tmp_path):
    _, archive, info = sqlite_source
    train, _ = emnist.load_data(path=archive, cache_dir=tmp_path)
    cached = tmp_path / "emnist" / "emnist_all.sqlite"
    assert train.path == str(cached) and cached.is_file()
    assert [p.name for p in (tmp_path / "emnist").iterdir()] == ["emnist_all.sqlite"]  # no temp files left
    np.testing.assert_array_equal(train.dataset(WRITERS[2])["y"], info[DIGITS]["train"][WRITERS[2]][1])
    # A directory holding the archive works too, and reuses the decompressed file.
    stamp = cached.stat().st_mtime_ns
    train, _ = emnist.load_data(path=archive.parent, cache_dir=tmp_path)
    assert train.path == str(cached) and cached.stat().st_mtime_ns == stamp


def test_a_truncated_lzma_archive_is_a_clear_error_and_caches_nothing(sqlite_source, tmp_path):
    _, archive, _ = sqlite_source
    broken = tmp_path / "emnist_all.sqlite.lzma"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptArchiveError, match=r"truncated or corrupt.*nothing was cached"):
        emnist.load_data(path=broken, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c" / "emnist").iterdir())


def test_sqlite_client_data_pickles(sqlite_source):
    path, _, info = sqlite_source
    train, _ = emnist.load_data(path=path)
    clone = pickle.loads(pickle.dumps(train))
    np.testing.assert_array_equal(clone.dataset(WRITERS[0])["x"], train.dataset(WRITERS[0])["x"])


def test_unknown_split_names_the_splits(sqlite_source):
    path, _, _ = sqlite_source
    with pytest.raises(ValueError, match=r"no clients in split 'digits_train'.*'all_test', 'all_train', 'digits_only_test'"):
        SQLiteClientData(path, "digits_train")


def test_a_file_without_tff_tables_is_named(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE examples (client_id TEXT, data BLOB)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match=r"table 'examples' lacks column\(s\) \['serialized_example_proto', 'split_name'\]"):
        SQLiteClientData(path, "train")
    db = sqlite3.connect(tmp_path / "half.sqlite")
    db.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match=r"has no table 'client_metadata'.*TFF's layout"):
        SQLiteClientData(tmp_path / "half.sqlite", "train")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(OSError, match=r"truncated, corrupt or not SQLite"):
        SQLiteClientData(tmp_path / "junk.sqlite", "train")


def test_a_missing_feature_or_a_bad_proto_names_client_and_example(tmp_path):
    path = tmp_path / "emnist_all.sqlite"
    pixels = np.zeros((2, 28, 28), np.float32)
    write_tff_sqlite(path, {"digits_only_train": {"w": (pixels, np.array([1, 2]))}, "digits_only_test": {"w": (pixels, np.array([3, 4]))}})
    db = sqlite3.connect(path)
    db.execute("UPDATE examples SET serialized_example_proto = ? WHERE rowid = 2", (encode_example({"pixels": pixels[0]}),))
    db.execute("UPDATE examples SET serialized_example_proto = ? WHERE rowid = 3", (b"\x0a\x10\x0a",))
    db.commit()
    db.close()
    train, test = emnist.load_data(path=path)
    with pytest.raises(ValueError, match=r"Client 'w', example 1 .* lacks feature\(s\) \['label'\]"):
        train.dataset("w")
    with pytest.raises(ValueError, match=r"Client 'w', example 0 .* not a serialized tf.train.Example"):
        test.dataset("w")
