"""Helpers for tests and offline quick starts.

:func:`busybox_tar` builds a minimal root filesystem from the host's static
busybox (Debian: ``apt-get install busybox-static``), which
``client.images.import_tar(busybox_tar(), tag="busybox")`` turns into a base
image with no registry access.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from typing import List, Optional

__all__ = ["busybox_tar", "find_busybox"]

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
_GROUP = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"


def _is_static(path: str) -> bool:
    """True for an ELF binary without a program interpreter (runs without libc)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF":
                return False
            is64 = head[4] == 2
            little = head[5] == 1
            order = "little" if little else "big"
            if is64:
                phoff = int.from_bytes(head[32:40], order)
                phentsize = int.from_bytes(head[54:56], order)
                phnum = int.from_bytes(head[56:58], order)
            else:
                phoff = int.from_bytes(head[28:32], order)
                phentsize = int.from_bytes(head[42:44], order)
                phnum = int.from_bytes(head[44:46], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type = int.from_bytes(table[i * phentsize:i * phentsize + 4], order)
            if p_type == 3:  # PT_INTERP
                return False
        return True
    except OSError:
        return False


def find_busybox() -> Optional[str]:
    """Path of a static busybox on this host (``ARBOR_BUSYBOX`` wins), or ``None``."""
    for p in (os.environ.get("ARBOR_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if p and os.path.isfile(p) and _is_static(p):
            return p
    return None


def busybox_tar(busybox: Optional[str] = None) -> bytes:
    """A minimal busybox root filesystem as tar bytes: ``/bin/busybox``, a
    symlink per applet in ``/bin``, ``/etc/passwd``, ``/etc/group`` and the
    usual empty directories."""
    bb = busybox or find_busybox()
    if not bb:
        raise FileNotFoundError("no static busybox found: apt-get install busybox-static (or set ARBOR_BUSYBOX)")
    out = subprocess.run([bb, "--list"], check=True, capture_output=True, text=True).stdout
    applets: List[str] = sorted(set(out.split()) - {"busybox"})
    mtime = int(time.time()) - 60
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str, mode: int) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, mtime
            tf.addfile(ti)

        def add_file(name: str, data: bytes, mode: int) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, mtime
            tf.addfile(ti, io.BytesIO(data))

        for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                        ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("proc", 0o555), ("sys", 0o555),
                        ("dev", 0o755), ("home", 0o755), ("var", 0o755), ("var/tmp", 0o1777)):
            add_dir(d, mode)
        with open(bb, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        for a in applets:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, mtime
            tf.addfile(ti)
        add_file("etc/passwd", _PASSWD.encode(), 0o644)
        add_file("etc/group", _GROUP.encode(), 0o644)
        add_file("etc/hostname", b"arbor\n", 0o644)
    return buf.getvalue()
