"""Fixtures: a real arbor daemon for the whole session.

The daemon binary comes from ``ARBOR_BIN`` (the repo's test script passes
``$PWD/bin/arbor``). Without it the daemon tests are skipped — or fail, when
``CI=true``. It runs as root with a temporary home, ``--listen
127.0.0.1:0`` and ``--runtime runc`` (override with ``ARBOR_TEST_RUNTIME``).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

PYDIR = Path(__file__).resolve().parent.parent
if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))  # test the source tree, not an installed copy

import arbor  # noqa: E402
from arbor.testing import busybox_tar, find_busybox  # noqa: E402

RUNTIME = os.environ.get("ARBOR_TEST_RUNTIME", "runc")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(msg: str) -> None:
    if _ci():
        pytest.fail(f"{msg} (CI=true: the daemon tests must run)", pytrace=False)
    pytest.skip(msg)


@dataclass
class Daemon:
    url: str
    token: str
    home: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """A running arbor daemon with a temporary home; stopped (SIGTERM) at the end."""
    binary = os.environ.get("ARBOR_BIN", "")
    if not binary or not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        _unavailable(
            f"ARBOR_BIN={binary!r} is not an executable arbor binary: build it with ./scripts/setup.sh and run "
            "ARBOR_BIN=$PWD/bin/arbor python3 -m pytest -q python/tests"
        )
    if os.geteuid() != 0:
        _unavailable("the arbor daemon needs root (it mounts overlays and starts sandboxes): run the tests as root")
    home = Path(tempfile.mkdtemp(prefix="arbor-pytest-"))
    log = home.parent / (home.name + ".log")
    logf = open(log, "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--home", str(home), "--listen", "127.0.0.1:0", "--runtime", RUNTIME],
        stdout=subprocess.PIPE,
        stderr=logf,
        stdin=subprocess.DEVNULL,
    )
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if (home / "url").exists():
                url = (home / "url").read_text().strip() or None
            continue
        if line is None:
            break
        m = re.search(r"listening on (\S+)", line)
        if m:
            url = m.group(1)
    d: Optional[Daemon] = None
    try:
        if url is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"arbor serve did not start (exit {proc.returncode}); log:\n{log.read_text(errors='replace')[-4000:]}",
                        pytrace=False)
        token = ""
        for _ in range(100):
            if (home / "token").exists():
                token = (home / "token").read_text().strip()
                if token:
                    break
            time.sleep(0.05)
        d = Daemon(url=url, token=token, home=home, proc=proc, log=log)
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logf.close()
        if proc.stdout is not None:
            proc.stdout.close()
        if d is not None and proc.returncode not in (0, -signal.SIGTERM):
            print(f"arbor serve exited {proc.returncode}; log tail:\n{d.log_tail()}", file=sys.stderr)
        _cleanup(home)
        try:
            log.unlink()
        except OSError:
            pass


def _cleanup(home: Path) -> None:
    # Leftover mounts under home (if the daemon died) must not be recursed into.
    try:
        with open("/proc/self/mounts") as f:
            mounted = [l.split()[1] for l in f if l.split()[1].startswith(str(home))]
        for m in sorted(mounted, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
    except OSError:
        pass
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def client(daemon: Daemon) -> Iterator[arbor.Client]:
    """A client of the session daemon (runs use the test runtime)."""
    with arbor.Client(url=daemon.url, token=daemon.token, runtime=RUNTIME, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def base(client: arbor.Client) -> arbor.Image:
    """The busybox base image, imported from a rootfs tar and tagged ``busybox``."""
    if not find_busybox():
        _unavailable("no static busybox on this host: apt-get install busybox-static")
    im = client.images.import_tar(busybox_tar(), tag="busybox")
    probe = im.run(shell="echo ready").wait()
    if probe.exit_code != 0 or probe.stdout != "ready\n":
        pytest.fail(
            f"a sandbox run on the busybox image failed with runtime {RUNTIME!r} "
            f"(exit {probe.exit_code}): {probe.stderr.strip()[:500]}",
            pytrace=False,
        )
    return im


@pytest.fixture(scope="session")
def env(base: arbor.Image) -> arbor.Result:
    """A non-disposable snapshot on top of busybox with /w/s = "base"."""
    r = base.run(shell="mkdir -p /w && echo base > /w/s", disposable=False).wait()
    assert r.exit_code == 0, r.stderr
    return r
