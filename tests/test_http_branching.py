"""The branching example over raw HTTP, with Python's standard library only.

It proves a client in any language needs nothing but HTTP and JSON: import a
base, a non-disposable install step, three branches from that state in
parallel with a PASS/FAIL line each, inspect the winner, tag it.

Run by the test suite (pytest) against a daemon it starts from ARBOR_BIN, or
by hand against a running daemon:  python3 tests/test_http_branching.py
(ARBOR_URL / ARBOR_TOKEN, else /var/lib/arbor/{url,token}).
"""

import io
import json
import os
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


class API:
    def __init__(self, url, token):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
                ctype = r.headers.get("Content-Type", "")
                return r.status, (json.loads(payload) if "json" in ctype and payload else payload)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait(self, op):
        deadline = time.time() + 300
        while time.time() < deadline:
            status, o = self.call("GET", "/v1/operations/" + op)
            assert status == 200, o
            if o["status"] in ("SUCCESS", "FAILED", "CANCELLED"):
                return o
            time.sleep(0.2)
        raise TimeoutError(op)

    def spawn(self, image, command, disposable=False):
        status, r = self.call("POST", "/v1/instances",
                              {"command": command, "image": image, "shell": True, "disposable": disposable})
        assert status in (201, 202), r
        return r["uuid"]


def busybox_tar():
    """A minimal busybox root filesystem, built from the host's busybox-static."""
    buf = io.BytesIO()
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "etc", "root", "tmp", "proc", "sys", "dev"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        tf.add("/bin/busybox", "bin/busybox")
        for a in applets:
            if a != "busybox":
                ti = tarfile.TarInfo("bin/" + a)
                ti.type, ti.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tf.addfile(ti)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        ti = tarfile.TarInfo("etc/passwd")
        ti.size = len(passwd)
        tf.addfile(ti, io.BytesIO(passwd))
    return buf.getvalue()


def branching(api, out=print):
    # Base image: upload a rootfs tar, import it, tag it.
    status, f = api.call("POST", "/v1/files", raw=busybox_tar(), headers={"Content-Type": "application/octet-stream"})
    assert status == 201 and len(f["sha256"]) == 64, f
    status, r = api.call("POST", "/v1/images/import", {"registry": {"url": "upload://" + f["uuid"]}, "tag": "http-base"})
    assert status in (201, 202), r
    imp = api.wait(r["uuid"])
    assert imp["status"] == "SUCCESS", imp
    base = imp["result"]["image"]

    # Install step, kept as a new image.
    op = api.wait(api.spawn(base, "mkdir -p /app && printf '#!/bin/sh\\n[ \"$(cat /app/mode)\" = pool ]\\n' > /app/test.sh && chmod +x /app/test.sh"))
    assert op["status"] == "SUCCESS" and op["metadata"]["result"]["state"]["exit_code"] == 0, op
    env = op["result_image_uuid"]
    assert env and env != base

    # Three branches from the same state, all started before any is awaited.
    names = ("retry", "pool", "async")
    ops = {n: api.spawn(env, f"echo {n} > /app/mode && /app/test.sh") for n in names}
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(names, pool.map(api.wait, ops.values())))
    verdicts = {}
    for n in names:
        code = results[n]["metadata"]["result"]["state"]["exit_code"]
        verdicts[n] = "PASS" if code == 0 else "FAIL"
        out(n, verdicts[n])
    assert verdicts == {"retry": "FAIL", "pool": "PASS", "async": "FAIL"}, verdicts

    # Inspect the winner without starting anything, then tag it.
    winner = results["pool"]["result_image_uuid"]
    status, listing = api.call("GET", f"/v1/inspect/{winner}/list?path=/app")
    assert status == 200 and {e["path"] for e in listing["files"]} == {"mode", "test.sh"}, listing
    status, body = api.call("GET", f"/v1/inspect/{winner}/download?path=/app/mode")
    assert status == 200 and body == b"pool\n", body
    status, im = api.call("PATCH", f"/v1/images/{winner}/tag", {"tag": "http-winner"})
    assert status == 200 and im["tag"] == "http-winner", im
    # The env image is untouched: rollback is just running on it again.
    status, body = api.call("GET", f"/v1/inspect/{env}/download?path=/app/mode")
    assert status == 404, body
    return verdicts


def _daemon():
    """Start a daemon from ARBOR_BIN on a temporary home; yield (url, token)."""
    binary = os.environ.get("ARBOR_BIN")
    if not binary or not os.access(binary, os.X_OK):
        if os.environ.get("CI") == "true":
            raise RuntimeError("ARBOR_BIN must point at the arbor binary in CI")
        import pytest
        pytest.skip("ARBOR_BIN not set")
    home = tempfile.mkdtemp(prefix="arbor-http-")
    proc = subprocess.Popen([binary, "serve", "--home", home, "--listen", "127.0.0.1:0", "--runtime", "runc"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if os.path.exists(os.path.join(home, "url")):
            break
        time.sleep(0.1)
    url = open(os.path.join(home, "url")).read().strip()
    token = open(os.path.join(home, "token")).read().strip()
    return proc, home, url, token


def test_branching_over_raw_http():
    proc, home, url, token = _daemon()
    try:
        assert branching(API(url, token)) is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        subprocess.run(["rm", "-rf", home])


if __name__ == "__main__":
    home = os.environ.get("ARBOR_HOME", "/var/lib/arbor")
    url = os.environ.get("ARBOR_URL") or open(os.path.join(home, "url")).read().strip()
    token = os.environ.get("ARBOR_TOKEN") or open(os.path.join(home, "token")).read().strip()
    branching(API(url, token))
