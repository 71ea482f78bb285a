"""Federated EMNIST: the loader and the whole download path, on small TFF-layout files the tests write."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fedcore.data import ClientData
from fedcore.data.datasets import emnist
from fedcore.data.download import ChecksumError, CorruptArchiveError, DownloadError

from .conftest import WRITERS, serve

DIGITS = "fed_emnist_digitsonly"


def _check(train, test, info):
    assert isinstance(train, ClientData) and isinstance(test, ClientData)
    assert train.client_ids == test.client_ids == tuple(sorted(WRITERS))
    assert str(train.element_spec["x"].dtype) == "float32" and train.element_spec["x"].shape == (28, 28)
    assert str(train.element_spec["y"].dtype) == "int32" and train.element_spec["y"].shape == ()
    for split, cd in (("train", train), ("test", test)):
        for w in WRITERS:
            pixels, label = info[split][w]
            d = cd.dataset(w)
            np.testing.assert_array_equal(d["x"], pixels)  # TFF's raw values by default
            np.testing.assert_array_equal(d["y"], label)


def test_load_from_a_directory_of_h5_files(emnist_source, tmp_path):
    _, info = emnist_source
    train, test = emnist.load_data(path=info[DIGITS]["h5dir"], cache_dir=tmp_path)
    _check(train, test, info[DIGITS])
    assert not (tmp_path / "emnist").exists()  # nothing copied into the cache


def test_load_from_an_archive_path_extracts_into_the_cache(emnist_source, tmp_path):
    _, info = emnist_source
    sha = info[DIGITS]["sha256"]
    train, test = emnist.load_data(path=info[DIGITS]["archive"], cache_dir=tmp_path, sha256=sha)
    _check(train, test, info[DIGITS])
    assert sorted(p.name for p in (tmp_path / "emnist").iterdir()) == [f"{DIGITS}_test.h5", f"{DIGITS}_train.h5"]
    # A directory holding the archive works too.
    d = tmp_path / "dl"
    d.mkdir()
    shutil.copy(info[DIGITS]["archive"], d)
    train, test = emnist.load_data(path=d, cache_dir=tmp_path / "c2", sha256=sha)
    _check(train, test, info[DIGITS])


def test_download_from_a_file_url_then_reuse_the_cache(emnist_source, tmp_path):
    root, info = emnist_source
    sha = info[DIGITS]["sha256"]
    train, test = emnist.load_data(cache_dir=tmp_path, base_url=root.as_uri(), sha256=sha)
    _check(train, test, info[DIGITS])
    cached = sorted(p.name for p in (tmp_path / "emnist").iterdir())
    assert cached == [f"{DIGITS}.tar.bz2", f"{DIGITS}_test.h5", f"{DIGITS}_train.h5"]
    # Second load: served from the cache, the (now unreachable) URL is never used.
    train, test = emnist.load_data(cache_dir=tmp_path, base_url="http://127.0.0.1:9/none", sha256=sha)
    _check(train, test, info[DIGITS])


def test_download_over_loopback_http_with_the_env_var(emnist_source, tmp_path, monkeypatch):
    root, info = emnist_source
    monkeypatch.setenv("FEDCORE_CACHE_DIR", str(tmp_path))
    with serve(root) as base:
        monkeypatch.setenv("FEDCORE_EMNIST_BASE_URL", base)
        train, test = emnist.load_data(only_digits=False, sha256=info["fed_emnist"]["sha256"])
    _check(train, test, info["fed_emnist"])
    assert (tmp_path / "emnist" / "fed_emnist_train.h5").is_file()


def test_invert_and_flatten(emnist_source, tmp_path):
    _, info = emnist_source
    train, _ = emnist.load_data(path=info[DIGITS]["h5dir"], invert=True, flatten=True)
    assert train.element_spec["x"].shape == (784,)
    w = WRITERS[0]
    np.testing.assert_allclose(train.dataset(w)["x"], 1.0 - info[DIGITS]["train"][w][0].reshape(-1, 784))
    assert train.dataset(w)["x"].dtype == np.float32 and train.dataset(w)["y"].dtype == np.int32


def test_published_checksums_are_used_by_default(emnist_source, tmp_path):
    """Without sha256=, the test archive fails TFF's published checksum: nothing is cached."""
    root, _ = emnist_source
    with pytest.raises(ChecksumError, match=f"expected sha256 {emnist.ARCHIVES[True][1]}"):
        emnist.load_data(cache_dir=tmp_path, base_url=root.as_uri())
    assert list((tmp_path / "emnist").iterdir()) == []
    with pytest.raises(CorruptArchiveError, match="Delete it and run again"):
        emnist.load_data(path=root / f"{DIGITS}.tar.bz2", cache_dir=tmp_path)


def test_truncated_archive(emnist_source, tmp_path):
    root, info = emnist_source
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    data = info[DIGITS]["archive"].read_bytes()
    (bad_root / f"{DIGITS}.tar.bz2").write_bytes(data[: len(data) // 2])
    # Served over HTTP cut short: a clear DownloadError, nothing cached.
    with serve(root, truncate=True) as base:
        with pytest.raises(DownloadError, match="run again to retry"):
            emnist.load_data(cache_dir=tmp_path / "c", base_url=base, sha256=info[DIGITS]["sha256"])
    assert list((tmp_path / "c" / "emnist").iterdir()) == []
    # A truncated local archive whose checksum is "trusted": extraction fails clearly, nothing left.
    from fedcore.data.download import sha256_file

    bad = bad_root / f"{DIGITS}.tar.bz2"
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        emnist.load_data(path=bad, cache_dir=tmp_path / "c", sha256=sha256_file(bad))
    assert [p.name for p in (tmp_path / "c" / "emnist").iterdir()] == []


def test_truncated_h5_file(emnist_source, tmp_path):
    _, info = emnist_source
    d = tmp_path / "h5"
    d.mkdir()
    for split in ("train", "test"):
        src = info[DIGITS]["h5dir"] / f"{DIGITS}_{split}.h5"
        (d / src.name).write_bytes(src.read_bytes()[:2048])
    with pytest.raises(OSError, match="truncated or corrupt.*Delete it"):
        emnist.load_data(path=d)


def test_missing_files(emnist_source, tmp_path):
    root, _ = emnist_source
    with pytest.raises(FileNotFoundError, match=r"holds neither fed_emnist_digitsonly_train\.h5.*Download"):
        emnist.load_data(path=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        emnist.load_data(path=tmp_path / "nowhere")
    with pytest.raises(DownloadError, match=r"Could not download .*fed_emnist_digitsonly\.tar\.bz2.*path="):
        emnist.load_data(cache_dir=tmp_path / "c", base_url=(tmp_path / "empty").as_uri())
    with serve(tmp_path) as base:
        with pytest.raises(DownloadError, match="HTTP 404"):
            emnist.load_data(cache_dir=tmp_path / "c", base_url=base)


def test_published_facts():
    assert emnist.ARCHIVES[True][0] == DIGITS and emnist.ARCHIVES[False][0] == "fed_emnist"
    assert emnist.NUM_CLIENTS == {True: 3383, False: 3400}
    assert emnist.NUM_TRAIN_EXAMPLES == {True: 341_873, False: 671_585}
    assert emnist.DEFAULT_BASE_URL == "https://storage.googleapis.com/tff-datasets-public"
