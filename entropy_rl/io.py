"""Crash-safe file writes: the one way every writer of entropy-rl puts a file on disk.

``write`` fills a temporary file beside the target; the file is flushed and fsynced, moved
into place with ``os.replace`` (atomic on POSIX), and the directory is fsynced so the rename
itself survives a power loss. A crash leaves the old file or the new one, never part of one,
and no temporary file behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import IO, Any


def fsync_dir(path: str) -> None:
    """Make a rename (or a new entry) in directory ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_beside(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> str:
    """``write(f)`` to a binary file object that becomes ``path`` atomically; returns ``path``."""

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_write_path(path, to_file)


def atomic_write_path(path: str | os.PathLike, write: Callable[[str], Any]) -> str:
    """Like :func:`atomic_write` for writers that want a file name (``pq.write_table``,
    ``DataFrame.to_parquet``): ``write(tmp_path)``, then fsync, replace, fsync the directory."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> str:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_replace_dir(build: Callable[[str], Any], dest: str | os.PathLike) -> str:
    """``build(tmp_dir)`` fills a fresh directory that then replaces ``dest`` whole (a model
    directory appears complete or not at all). Every file in it is fsynced first."""
    dest = os.fspath(dest)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = _tmp_beside(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        build(tmp)
        for folder, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    os.fsync(f.fileno())
            fsync_dir(folder)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    return dest
