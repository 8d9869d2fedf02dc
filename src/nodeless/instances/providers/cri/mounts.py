"""tmpfs mounts for pod volumes, by the mount(2) and umount2(2) system calls,
and the mount table read for what is mounted under a directory.

Every pod on a cluster with service accounts has a projected volume, which
the kubelet keeps in memory; spawning ``mount`` and ``umount`` for each pod
forks the whole Nodeless process twice per pod, on the path every pod start
takes. The calls block briefly, so callers run them in a thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

MNT_DETACH = 2  # umount2: detach now, free when no longer busy

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def under(path: Path | str) -> list[str]:
    """Mount points at or below ``path``, in mount order (unmount in reverse)."""
    prefix = os.fspath(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts") as table:
            points = [fields[1] for fields in map(str.split, table) if len(fields) > 1]
    except OSError:
        return []
    return [p for p in points if p == prefix[:-1] or p.startswith(prefix)]


def mount_tmpfs(target: Path, options: str) -> None:
    """Mounts a tmpfs on ``target`` with ``options`` ("mode=0755,size=64m");
    raises ``OSError`` saying why it could not."""
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, options.encode()) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount tmpfs on {target} ({options}): {os.strerror(code)}")


def unmount(target: Path | str, *, detach: bool = False) -> None:
    """Unmounts ``target``; raises ``OSError`` saying why it could not."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH if detach else 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"umount {target}: {os.strerror(code)}")
