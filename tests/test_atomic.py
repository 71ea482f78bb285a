"""fedcore._atomic.atomic_writer: the old file or the new one, never half of one; no temp left; fsyncs."""

import os
import stat

import pytest

from fedcore import _atomic
from fedcore._atomic import atomic_writer, is_temp_name


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fsync'd descriptor, recorded as 'dir' or 'file' (then really fsynced)."""
    seen = []
    real = os.fsync

    def record(fd):
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


def test_writes_text_and_bytes_and_fsyncs_the_file_then_the_directory(tmp_path, fsyncs):
    p = tmp_path / "sub" / "config.toml"  # the directory is created
    with atomic_writer(p) as f:
        f.write("rounds = 3\n")
    assert p.read_text() == "rounds = 3\n"
    assert fsyncs == ["file", "dir"]
    with atomic_writer(p, "wb") as f:
        f.write(b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert fsyncs == ["file", "dir"] * 2
    assert os.listdir(p.parent) == ["config.toml"]


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp(tmp_path, fsyncs):
    p = tmp_path / "metrics.jsonl"
    p.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(p) as f:
            f.write("new, half")
            f.flush()
            (temp,) = [n for n in os.listdir(tmp_path) if n != p.name]
            assert is_temp_name(temp, r"metrics\.jsonl") and temp.startswith(".metrics.jsonl.")
            raise KeyboardInterrupt
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == [p.name]
    assert "dir" not in fsyncs  # nothing was renamed


def test_a_crash_after_the_fsync_before_the_rename_leaves_the_old_file(tmp_path, fsyncs):
    p = tmp_path / "ckpt.eqx"
    p.write_bytes(b"old")

    def crash(tmp):
        assert tmp.read_bytes() == b"new" and fsyncs == ["file"]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        with atomic_writer(p, "wb", before_replace=crash) as f:
            f.write(b"new")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == [p.name]


def test_the_new_file_has_ordinary_permissions(tmp_path):
    p = tmp_path / "a.txt"
    with atomic_writer(p) as f:
        f.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_temp_names_and_bad_modes():
    name = _atomic.temp_name("ckpt-000001.eqx")
    assert is_temp_name(name, r"ckpt-\d+\.eqx")
    assert not is_temp_name(name, r"other")
    assert not is_temp_name(".ckpt-000001.eqx.tmp.123", r"ckpt-\d+\.eqx")
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_writer("x", "a"):
            pass
