"""tmpfs mounts by system call: failures say what and why (the mounting
itself is exercised by the CRI volume tests on real containerd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeless.instances.providers.cri import mounts


def test_a_mount_that_fails_says_where_with_which_options_and_why(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with pytest.raises(OSError, match=rf"mount tmpfs on {missing} \(mode=0755\): ") as failed:
        mounts.mount_tmpfs(missing, "mode=0755")

    assert failed.value.errno  # ENOENT as root, EPERM otherwise


def test_unmounting_what_is_not_a_mount_fails_saying_so(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=rf"umount {tmp_path}: "):
        mounts.unmount(tmp_path)


def test_what_is_mounted_under_a_directory_includes_itself_and_nothing_beside(
    tmp_path: Path,
) -> None:
    assert "/proc" in mounts.under("/proc")
    assert all(m == "/proc" or m.startswith("/proc/") for m in mounts.under("/proc"))
    assert mounts.under(tmp_path) == []
