"""The plugin's one way to write a file that readers may see at any moment: label files,
checkpoints, probe caches, experiment records.

- ``atomic_write``: the bytes go to ``tmp_path_for(path)`` in the same folder, are
  fsynced, and the file is ``os.replace``d over ``path`` (atomic on POSIX file systems):
  ``path`` holds the previous complete content or the new complete content, never part
  of it. The file gets the mode a plain ``open`` gives.
- ``tmp_path_for``: ``.<name>.vcf-<host>-<pid>.tmp``: hidden, not ending in ``.torch`` or
  ``.npy`` (so VISSL's checkpoint lookups and our label lookups never count it), and
  naming its writer, so that
- ``remove_stale_tmp_files`` deletes only the temporary files of writers that are gone
  (killed mid-write), never one a live process on this host is writing.
- ``read_json``: a JSON file, or a default when it does not exist.
"""

import contextlib
import json
import logging
import os
import re
import socket
from typing import Any, BinaryIO, Callable, List


_TMP_RE = re.compile(r"^\.(?P<name>.+)\.vcf-(?P<host>.+)-(?P<pid>\d+)\.tmp$")


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def tmp_path_for(path: str) -> str:
    """The temporary file ``atomic_write`` writes before renaming it to ``path``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.vcf-{_host()}-{os.getpid()}.tmp")


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into a binary file that appears at ``path`` complete or not at all.

    A failed write (exception) removes its temporary file; a killed one leaves only the
    temporary file, which ``remove_stale_tmp_files`` deletes later.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp_files(folder: str) -> List[str]:
    """Delete the temporary files of killed ``atomic_write`` calls in ``folder``;
    returns their paths. Only files with our name pattern are touched, and none whose
    writer is a live process on this host."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host, removed = _host(), []
    for name in names:
        match = _TMP_RE.match(name)
        if match is None:
            continue
        if match["host"] == host and _pid_alive(int(match["pid"])):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
            logging.warning(
                f"Removed {path}: the partial file of a write that was killed before "
                "it finished"
            )
    return removed


def read_json(path: str, default: Any) -> Any:
    """The JSON content of ``path``, or ``default`` when there is no such file."""
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)
