"""Pure-logic tests: no daemon needed. Transport behaviour (retries, gzip,
error mapping, SSE parsing, resume) runs against a tiny in-process HTTP server."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

import arbor
from arbor import errors
from arbor._http import RetryPolicy, Transport, encode_query, parse_retry_after
from arbor.models import Event, FileEntry, decode_stream, encode_stream
from arbor.objects import _sse_frames

PYDIR = Path(__file__).resolve().parent.parent

OP = "11111111-2222-3333-4444-555555555555"
IMG = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
IMG2 = "aaaaaaaa-bbbb-cccc-dddd-ffffffffffff"


class Fake:
    """A scripted HTTP server: ``handler(method, path, headers, body)`` returns
    ``(status, headers, body_bytes)`` or a callable that writes to the socket."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        self.handler = handler
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _do(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.headers.get("Transfer-Encoding") == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((self.command, self.path, hdrs, body))
                out = fake.handler(self.command, self.path, hdrs, body)
                if callable(out):
                    out(self)
                    return
                status, headers, payload = out
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_HEAD = _do

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def fake():
    made: List[Fake] = []

    def make(handler: Callable[..., Any]) -> Fake:
        f = Fake(handler)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


FAST = RetryPolicy(attempts=4, backoff=(0.01,), max_wait=0.2)


def client_for(f: Fake, **kw: Any) -> arbor.Client:
    return arbor.Client(url=f.url, token="t0k", retry=FAST, **kw)


def js(status: int, obj: Any, **headers: str) -> Tuple[int, Dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode()


# -- small pure functions -----------------------------------------------------


def test_encode_query() -> None:
    assert encode_query({"a": None, "b": True, "c": False, "d": ["x y", "/p"], "e": 3}) == "b=1&c=0&d=x%20y&d=/p&e=3"
    assert encode_query(None) == ""


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    import email.utils

    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (parse_retry_after(future) or 0) <= 31


def test_stream_codec() -> None:
    assert decode_stream({"value": "aGkK", "encoding": "base64"}) == b"hi\n"
    assert decode_stream({"value": "hi\n", "encoding": "ascii"}) == b"hi\n"
    assert decode_stream(None) == b""
    assert encode_stream(b"hi\n") == {"value": "hi\n", "encoding": "ascii"}
    assert encode_stream(b"\xff") == {"value": "/w==", "encoding": "base64"}


def test_error_classes() -> None:
    for status, cls in [(400, errors.BadRequest), (401, errors.Unauthorized), (403, errors.Forbidden),
                        (404, errors.NotFound), (409, errors.Conflict), (413, errors.TooLarge),
                        (425, errors.TooEarly), (429, errors.RateLimited), (500, errors.ServerError),
                        (503, errors.ServerError), (418, errors.HTTPError)]:
        assert errors.error_for_status(status) is cls
        assert issubclass(cls, arbor.ArborError)
    assert issubclass(arbor.WaitTimeout, TimeoutError)


def test_file_entry() -> None:
    e = FileEntry.from_wire("/etc", {"path": "passwd", "size": 10, "mode": 0o100644, "is_regular": True})
    assert e.path == "/etc/passwd" and e.name == "passwd" and e.permissions == 0o644
    assert e.filemode == "-rw-r--r--"


def test_event_from_frame() -> None:
    ev = Event.from_frame("3", "stdout", json.dumps({"id": 3, "type": "stdout", "spid": 1, "ts": "x",
                                                     "data": {"value": "aGkK", "encoding": "base64"}}))
    assert (ev.id, ev.type, ev.spid, ev.text) == (3, "stdout", 1, "hi\n")


class _Lines:
    def __init__(self, data: bytes) -> None:
        self.b = io.BytesIO(data)

    def readline(self) -> bytes:
        return self.b.readline()


def test_sse_parser() -> None:
    raw = b": keepalive\n\nid: 1\nevent: a\ndata: {\"x\":1}\n\nid: 2\r\nevent: b\r\ndata: l1\r\ndata: l2\r\n\r\n"
    frames = list(_sse_frames(_Lines(raw)))
    assert frames == [None, ("1", "a", '{"x":1}'), ("2", "b", "l1\nl2")]


def test_busybox_tar() -> None:
    from arbor.testing import busybox_tar, find_busybox

    if not find_busybox():
        pytest.skip("no static busybox on this host")
    with tarfile.open(fileobj=io.BytesIO(busybox_tar())) as tf:
        names = set(tf.getnames())
        assert {"bin/busybox", "bin/sh", "etc/passwd", "tmp", "root"} <= names
        assert tf.getmember("bin/sh").issym()


# -- discovery ----------------------------------------------------------------


def test_discover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("ARBOR_URL", "ARBOR_TOKEN", "ARBOR_HOME"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "url").write_text("http://127.0.0.1:9\n")
    (tmp_path / "token").write_text("secret\n")
    assert arbor.discover(home=tmp_path) == ("http://127.0.0.1:9", "secret")
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path))
    assert arbor.discover() == ("http://127.0.0.1:9", "secret")
    monkeypatch.setenv("ARBOR_TOKEN", "env-token")
    monkeypatch.setenv("ARBOR_URL", "http://h:1")
    assert arbor.discover() == ("http://h:1", "env-token")
    assert arbor.discover(url="http://x:2", token="t") == ("http://x:2", "t")
    monkeypatch.delenv("ARBOR_URL")
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path / "nope"))
    with pytest.raises(arbor.ConfigError, match="cannot find the arbor daemon"):
        arbor.Client()


# -- transport against a fake server --------------------------------------------


def test_error_mapping_and_message(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(404, {"error": "image not found", "status": 404}))
    c = client_for(f)
    with pytest.raises(arbor.NotFound) as ei:
        c.images.get(IMG)
    assert ei.value.status == 404 and ei.value.message == "image not found"
    assert "image not found" in str(ei.value)
    assert f.requests[0][2]["authorization"] == "Bearer t0k"


def test_non_json_error_body(fake: Any) -> None:
    f = fake(lambda m, p, h, b: (502, {"Content-Type": "text/plain"}, b"bad gateway"))
    with pytest.raises(arbor.ServerError, match="bad gateway"):
        client_for(f).whoami()
    assert len(f.requests) == FAST.attempts  # idempotent GET was retried


def test_retry_425_honours_retry_after_even_for_post(fake: Any) -> None:
    calls = {"n": 0}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return js(429, {"error": "slow down"}, **{"Retry-After": "0.05"})
        return js(201, {"uuid": OP}, Location=f"/v1/operations/{OP}")

    f = fake(h)
    c = client_for(f)
    t0 = time.monotonic()
    op = c.images.use(IMG).run(shell="true")
    assert op.id == OP and calls["n"] == 2
    assert time.monotonic() - t0 >= 0.04
    body = json.loads(f.requests[-1][3])
    assert body == {"command": "true", "image": IMG, "shell": True, "disposable": True}


def test_no_retry_of_post_on_503(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(503, {"error": "busy"}))
    with pytest.raises(arbor.ServerError):
        client_for(f).images.use(IMG).run(shell="true")
    assert len(f.requests) == 1


def test_connection_refused() -> None:
    c = arbor.Client(url="http://127.0.0.1:1", token="x", retry=RetryPolicy(attempts=2, backoff=(0.01,)))
    with pytest.raises(arbor.ConnectionFailed, match="daemon running"):
        c.whoami()


def test_gzip_response(fake: Any) -> None:
    payload = gzip.compress(json.dumps({"token_uuid": "u", "permissions": {}}).encode())
    f = fake(lambda m, p, h, b: (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, payload))
    assert client_for(f).whoami()["token_uuid"] == "u"
    assert "gzip" in f.requests[0][2]["accept-encoding"]


def test_find_by_tag_redirect(fake: Any) -> None:
    f = fake(lambda m, p, h, b: (302, {"Location": f"{IMG}/"}, b""))
    im = client_for(f).images.use("tag:busybox:latest")
    assert im.uuid == IMG
    assert f.requests[0][1] == "/v1/inspect/?tag=busybox%3Alatest"


def test_uuid_ref_needs_no_request(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(500, {}))
    assert client_for(f).images.use(IMG.upper()).uuid == IMG
    assert f.requests == []


def test_url_prefix(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(200, {"token_uuid": "u"}))
    arbor.Client(url=f.url + "/sandboxes/", token="t").whoami()
    assert f.requests[0][1] == "/sandboxes/v1/whoami"


def test_upload_dedup_and_chunked(fake: Any, tmp_path: Path) -> None:
    stored: Dict[str, bytes] = {}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "GET" and p.startswith("/v1/files/"):
            sha = p.rsplit("/", 1)[1]
            if sha in stored:
                return js(200, {"uuid": "f-" + sha[:8], "sha256": sha, "size": len(stored[sha])})
            return js(404, {"error": "file not found"})
        if m == "POST" and p == "/v1/files":
            sha = hashlib.sha256(b).hexdigest()
            stored[sha] = b
            return js(201, {"uuid": "f-" + sha[:8], "sha256": sha, "size": len(b)})
        return js(500, {"error": p})

    f = fake(h)
    c = client_for(f)
    a = c.files.upload(b"hello")
    assert a.sha256 == hashlib.sha256(b"hello").hexdigest()
    c2 = client_for(f)  # a fresh client: no local cache
    assert c2.files.upload(b"hello") == a
    posts = [r for r in f.requests if r[0] == "POST"]
    assert len(posts) == 1
    # A non-seekable stream is spooled and sent; a path is sent with its length.
    r, w = os.pipe()
    os.write(w, b"piped data")
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        up = c.files.upload(pipe)
    assert stored[up.sha256] == b"piped data"
    p = tmp_path / "x.txt"
    p.write_bytes(b"from a path")
    up = c.files.upload(p)
    assert stored[up.sha256] == b"from a path"


def test_run_files_specs(fake: Any, tmp_path: Path) -> None:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "GET" and p.startswith("/v1/files/"):
            return js(404, {"error": "no"})
        if m == "POST" and p == "/v1/files":
            sha = hashlib.sha256(b).hexdigest()
            return js(201, {"uuid": "00000000-0000-0000-0000-" + sha[:12], "sha256": sha, "size": len(b)})
        if m == "POST" and p == "/v1/instances":
            return js(201, {"uuid": OP})
        return js(500, {"error": p})

    f = fake(h)
    c = client_for(f)
    d = tmp_path / "src"
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "a.py").write_text("a")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    c.images.use(IMG).run(shell="true", cwd="/w", files={
        "/w/src": d,
        "rel.txt": b"bytes",
        "/w/run.sh": script,
        "/w/ro": arbor.FileSpec(b"x", mode=0o400, uid=1, gid=2),
        "/w/by-uuid": "12345678-1234-1234-1234-123456789abc",
    })
    body = json.loads([r for r in f.requests if r[1] == "/v1/instances"][-1][3])
    files = body["files"]
    assert set(files) == {"/w/src/pkg/a.py", "/w/rel.txt", "/w/run.sh", "/w/ro", "/w/by-uuid"}
    assert files["/w/run.sh"]["mode"] == "0755"
    assert files["/w/ro"] == {"uuid": files["/w/ro"]["uuid"], "mode": "0400", "uid": 1, "gid": 2}
    assert files["/w/by-uuid"]["uuid"] == "12345678-1234-1234-1234-123456789abc"
    assert body["cwd"] == "/w"


def test_run_argument_forms(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(201, {"uuid": OP}))
    im = client_for(f).images.use(IMG)

    def last() -> Dict[str, Any]:
        return json.loads(f.requests[-1][3])

    im.run("echo hi")
    assert last()["shell"] is True and last()["command"] == "echo hi"
    im.run(["echo", "a b"])
    assert last()["shell"] is False and last()["command"] == "echo" and last()["args"] == ["a b"]
    im.run("echo", args=["x"])
    assert last()["shell"] is False and last()["args"] == ["x"]
    im.run(shell="x", timeout=1.2, stdin="in", env={"A": 1}, tag="t", runtime="runc", network=False, memory_bytes=1 << 20)
    b = last()
    assert b["timeout"] == 2 and b["stdin"] == {"value": "in", "encoding": "ascii"} and b["env"] == {"A": "1"}
    assert b["disposable"] is False and b["runtime"] == "runc" and b["networking"] == {"enabled": False}
    assert b["resources_limits"] == {"memory_bytes": 1 << 20}
    with pytest.raises(TypeError):
        im.run()
    im.run("true", allow=["pypi.org", "tcp:443"], deny=["*.evil.test"])
    assert last()["networking"] == {"enabled": True, "egress": {"allow": ["pypi.org", "tcp:443"], "deny": ["*.evil.test"]}}
    with pytest.raises(TypeError):
        im.run("true", allow="pypi.org")


def _sse(events: List[Dict[str, Any]]) -> bytes:
    out = b""
    for e in events:
        out += b"id: %d\nevent: %s\ndata: %s\n\n" % (e["id"], e["type"].encode(), json.dumps(e).encode())
    return out


def test_events_resume_after_cut(fake: Any) -> None:
    evs = [{"id": i, "type": t, "spid": s, "ts": "2026-01-01T00:00:00Z", "data": {}}
           for i, (t, s) in enumerate([("init", 0), ("spawn", 1), ("exit", 1), ("completion", 0)])]
    evs[3]["data"] = {"status": "SUCCESS", "result_image_uuid": None}
    seen_last: List[str] = []

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        last = hd.get("last-event-id")
        seen_last.append(last or "")
        after = int(last) if last is not None else -1
        rest = [e for e in evs if e["id"] > after]
        if last is None:
            # First connection: two events, then the connection dies mid-frame.
            def cut(handler: Any) -> None:
                handler.send_response(200)
                handler.send_header("Content-Type", "text/event-stream")
                handler.send_header("Connection", "close")
                handler.end_headers()
                handler.wfile.write(b": keepalive\n\n" + _sse(rest[:2]) + b"id: 2\nevent: ex")
                handler.wfile.flush()
                handler.close_connection = True
            return cut
        return 200, {"Content-Type": "text/event-stream"}, _sse(rest)

    f = fake(h)
    c = client_for(f)
    got = list(c.operations.events(OP))
    assert [e.id for e in got] == [0, 1, 2, 3]
    assert got[-1].type == "completion"
    assert seen_last == ["", "1"]
    assert "follow=1" in f.requests[0][1]


def test_events_sse_error_reconnects(fake: Any) -> None:
    evs = [{"id": 0, "type": "init", "spid": 0, "data": {}}, {"id": 1, "type": "completion", "spid": 0, "data": {"status": "SUCCESS"}}]
    n = {"calls": 0}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        n["calls"] += 1
        if n["calls"] == 1:
            return 200, {"Content-Type": "text/event-stream"}, _sse(evs[:1]) + b"event: sse_error\ndata: upstream closed\n\n"
        assert hd.get("last-event-id") == "0"
        return 200, {"Content-Type": "text/event-stream"}, _sse(evs[1:])

    f = fake(h)
    assert [e.type for e in client_for(f).operations.events(OP)] == ["init", "completion"]


def test_wait_falls_back_to_polling(fake: Any) -> None:
    state = {"polls": 0}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if p.startswith(f"/v1/operations/{OP}/events"):
            return js(405, {"error": "no events here"})
        state["polls"] += 1
        st = "SUCCESS" if state["polls"] >= 3 else "EXECUTING"
        return js(200, {"uuid": OP, "kind": "instance", "status": st, "duration": 1.5,
                        "result_image_uuid": IMG,
                        "metadata": {"result": {"state": {"exit_code": 3, "timed_out": False, "signal": -1},
                                                "stdout": {"value": "aGkK", "encoding": "base64"},
                                                "stderr": {"value": "err", "encoding": "ascii", "truncated": True},
                                                "resources": {"max_rss": 5}}}})

    f = fake(h)
    r = client_for(f).operations.wait(OP)
    assert (r.exit_code, r.stdout, r.stderr, r.stderr_truncated, r.duration) == (3, "hi\n", "err", True, 1.5)
    assert r.image is not None and r.image.uuid == IMG and r.resources == {"max_rss": 5}
    assert not r.ok
    with pytest.raises(arbor.CommandFailed):
        r.check()


def test_wait_long_polls(fake: Any) -> None:
    seen: List[str] = []

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        seen.append(p)
        assert "/events" not in p, "a long poll that answered the end needs no event stream"
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
        assert q["wait"][0].endswith("s") and 0 < float(q["wait"][0][:-1]) <= 50
        return js(200, {"uuid": OP, "kind": "instance", "status": "SUCCESS", "duration": 0.5,
                        "metadata": {"result": {"state": {"exit_code": 0, "timed_out": False, "signal": -1}}}})

    f = fake(h)
    r = client_for(f).operations.wait(OP, timeout=20)
    assert r.ok and len(seen) == 1, seen
    assert "wait=20" in seen[0] or "wait=19" in seen[0], seen  # bounded by the caller's timeout


def test_wait_long_poll_not_an_operation(fake: Any) -> None:
    # A wait answered with something that is not an operation is not trusted:
    # the event stream and a read decide.
    evs = [{"id": 0, "type": "completion", "spid": 0, "data": {"status": "SUCCESS"}}]
    seen: List[str] = []

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        seen.append(p.split("?")[0].rsplit("/", 1)[-1] + ("?wait" if "wait=" in p else ""))
        if "wait=" in p:
            return js(200, ["not", "an", "operation"])
        if "/events" in p:
            return 200, {"Content-Type": "text/event-stream"}, _sse(evs)
        return js(200, {"uuid": OP, "kind": "instance", "status": "SUCCESS",
                        "metadata": {"result": {"state": {"exit_code": 0, "timed_out": False, "signal": -1}}}})

    r = client_for(fake(h)).operations.wait(OP, timeout=20)
    assert r.ok and seen == [OP + "?wait", "events", OP], seen


def test_wait_timeout(fake: Any) -> None:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if "/events" in p:
            def slow(handler: Any) -> None:
                handler.send_response(200)
                handler.send_header("Content-Type", "text/event-stream")
                handler.end_headers()
                handler.wfile.flush()
                time.sleep(1.0)
            return slow
        return js(200, {"uuid": OP, "status": "EXECUTING"})

    f = fake(h)
    t0 = time.monotonic()
    with pytest.raises(arbor.WaitTimeout):
        client_for(f).operations.wait(OP, timeout=0.3)
    assert time.monotonic() - t0 < 1.5


def test_wait_failed_and_cancelled(fake: Any) -> None:
    status = {"v": "FAILED"}
    f = fake(lambda m, p, h, b: js(200, {"uuid": OP, "kind": "instance", "status": status["v"], "error": "boom"}))
    c = client_for(f)
    op = arbor.Operation(c, OP, data={"status": "FAILED", "error": "boom"})
    with pytest.raises(arbor.OperationFailed, match="boom"):
        op.wait()
    status["v"] = "CANCELLED"
    with pytest.raises(arbor.OperationCancelled):
        arbor.Operation(c, OP, data={"status": "CANCELLED"}).wait()


# -- step(): one request per step ------------------------------------------------


def _op_json(status: str = "SUCCESS", exit_code: int = 0, out: str = "aGkK", image: Any = None) -> Dict[str, Any]:
    return {"uuid": OP, "kind": "instance", "status": status, "duration": 0.25, "image_uuid": IMG,
            "result_image_uuid": image,
            "metadata": {"result": {"state": {"exit_code": exit_code, "timed_out": False, "signal": -1},
                                    "stdout": {"value": out, "encoding": "base64"}}}}


def test_step_is_one_request(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(201, _op_json(), Location=f"/v1/operations/{OP}"))
    c = client_for(f)
    timeouts: List[Any] = []
    request = c._t.request

    def spy(*a: Any, **kw: Any) -> Any:
        timeouts.append(kw.get("timeout"))
        return request(*a, **kw)

    c._t.request = spy  # type: ignore[method-assign]
    r = c.images.use(IMG).step("echo hi", env={"A": "1"}, wait_timeout=20)
    assert (r.exit_code, r.stdout, r.ok, r.operation_id, r.duration) == (0, "hi\n", True, OP, 0.25)
    assert len(f.requests) == 1, [q[:2] for q in f.requests]
    m, p, _, b = f.requests[0]
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
    assert m == "POST" and p.startswith("/v1/instances?") and q["wait"][0].endswith("s")
    assert 19 < float(q["wait"][0][:-1]) <= 20  # bounded by wait_timeout
    assert 49 < timeouts[0] <= 50  # the socket outlasts the wait
    assert json.loads(b) == {"command": "echo hi", "image": IMG, "shell": True, "disposable": True, "env": {"A": "1"}}
    # Without a bound the server is asked for its longest wait.
    c.images.use(IMG).step("true")
    assert "wait=50.000s" in f.requests[-1][1]
    with pytest.raises(TypeError):
        c.images.use(IMG).step("true", keep_stdin=True)  # type: ignore[call-arg]


def test_step_falls_back_to_waiting(fake: Any) -> None:
    # A server that ignores ?wait= answers the spawn at once; one whose wait
    # ran out answers the operation unfinished: both are waited for by GET.
    for answer in ({"uuid": OP, "image": IMG}, _op_json("EXECUTING", -1, "")):
        def h(m: str, p: str, hd: Dict[str, str], b: bytes, answer: Dict[str, Any] = answer) -> Any:
            if m == "POST":
                return js(201, answer, Location=f"/v1/operations/{OP}")
            return js(200, _op_json())

        f = fake(h)
        r = client_for(f).images.use(IMG).step("echo hi")
        assert r.stdout == "hi\n"
        assert [(q[0], q[1].split("?")[0]) for q in f.requests] == [("POST", "/v1/instances"), ("GET", f"/v1/operations/{OP}")]
        assert "wait=" in f.requests[1][1]


def test_step_retries_without_wait_on_400(fake: Any) -> None:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST" and "wait=" in p:
            return js(400, {"error": "unknown parameter wait"})
        if m == "POST":
            return js(201, {"uuid": OP}, Location=f"/v1/operations/{OP}")
        return js(200, _op_json())

    f = fake(h)
    assert client_for(f).images.use(IMG).step("true").ok
    posts = [q[1] for q in f.requests if q[0] == "POST"]
    assert len(posts) == 2 and "wait=" in posts[0] and posts[1] == "/v1/instances"
    # A body the server rejects is rejected again, and raised.
    f2 = fake(lambda m, p, hd, b: js(400, {"error": "command is required"}))
    with pytest.raises(arbor.BadRequest, match="command is required"):
        client_for(f2).images.use(IMG).step("true")
    assert len(f2.requests) == 2


def _cut(status: int, headers: Dict[str, str], declared: int, sent: bytes) -> Any:
    """A fake answer whose connection dies partway through the body: status and
    headers, a Content-Length of declared, then only sent."""
    def cut(handler: Any) -> None:
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(declared))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(sent)
        handler.wfile.flush()
        handler.close_connection = True
    return cut


def _cut_201(location: bool) -> Any:
    """A fake answer to a spawn: a 201 (with its Location if location), then
    the connection dies partway through the body."""
    headers = {"Location": f"/v1/operations/{OP}"} if location else {}
    headers["Content-Type"] = "application/json"
    return _cut(201, headers, 500, b'{"uuid": "')


def test_step_read_failure_never_spawns_again(fake: Any) -> None:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST":
            return _cut_201(location=True)  # the 201 and Location, then the connection dies
        return js(200, _op_json())

    f = fake(h)
    assert client_for(f).images.use(IMG).step("true").stdout == "hi\n"
    assert [q[0] for q in f.requests] == ["POST", "GET"]


def test_step_cancels_on_timeout_and_interrupt(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST":
            return js(201, _op_json("EXECUTING", -1, ""), Location=f"/v1/operations/{OP}")
        if m == "DELETE":
            return 202, {}, b""
        if "/events" in p:
            return js(405, {"error": "no events"})
        return js(200, _op_json("EXECUTING", -1, ""))

    f = fake(h)
    c = client_for(f)
    with pytest.raises(arbor.WaitTimeout) as ei:
        c.images.use(IMG).step("sleep 60", wait_timeout=0.3)
    assert ei.value.operation.id == OP
    assert f.requests[-1][:2] == ("DELETE", f"/v1/operations/{OP}")
    n = len(f.requests)
    with pytest.raises(arbor.WaitTimeout):
        c.images.use(IMG).step("sleep 60", wait_timeout=0.3, cancel_on_exit=False)
    assert "DELETE" not in [q[0] for q in f.requests[n:]]

    def interrupted(self: Any, *a: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(arbor.Operation, "_wait", interrupted)  # Ctrl-C while the step waits
    n = len(f.requests)
    with pytest.raises(KeyboardInterrupt):
        c.images.use(IMG).step("sleep 60")
    assert [q[0] for q in f.requests[n:]] == ["POST", "DELETE"]


def test_step_retry_without_wait_reads_through_the_guard(fake: Any) -> None:
    # The spawn retried without ?wait= (a server that refused it) is read as
    # the first is: a body that breaks names the run by its Location, or
    # says it may have started; it is never spawned a third time.
    state = {"location": True}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST" and "wait=" in p:
            return js(400, {"error": "unknown parameter wait"})
        if m == "POST":
            return _cut_201(location=state["location"])
        return js(200, _op_json())

    f = fake(h)
    im = client_for(f).images.use(IMG)
    assert im.step("true").stdout == "hi\n"
    assert [q[0] for q in f.requests] == ["POST", "POST", "GET"]
    state["location"] = False
    n = len(f.requests)
    with pytest.raises(arbor.ConnectionFailed, match=r"may have started: look for it with client.operations.list"):
        im.step("true")
    assert [q[0] for q in f.requests[n:]] == ["POST", "POST"]


def test_spawn_names_its_operation_one_way(fake: Any) -> None:
    # A spawn whose answer names no uuid: the Location names the operation,
    # query and all stripped, for run(), step() and imports alike.
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST":
            return js(201, {}, Location=f"/v1/operations/{OP}/?from=spawn")
        return js(200, _op_json())

    c = client_for(fake(h))
    assert c.images.use(IMG).run("true").id == OP
    assert c.images.use(IMG).step("true").operation_id == OP
    assert c.images.import_image("upload://x", wait=False).id == OP  # type: ignore[union-attr]


def test_step_keywords_are_runs(fake: Any) -> None:
    from arbor.aio import AsyncClient

    f = fake(lambda m, p, h, b: js(201, _op_json(), Location=f"/v1/operations/{OP}"))
    im = client_for(f).images.use(IMG)
    with pytest.raises(TypeError, match="step\\(\\) takes no keep_stdin: .*use run\\(keep_stdin=True\\)"):
        im.step("true", keep_stdin=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        im.step("true", nonsense=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        im.run("true", nonsense=1)  # type: ignore[call-arg]

    async def main() -> None:
        async with AsyncClient(url=f.url, token="t") as c:
            aim = await c.images.use(IMG)
            with pytest.raises(TypeError, match="step\\(\\) takes no keep_stdin"):
                await aim.step("true", keep_stdin=True)
            with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
                await aim.step("true", nonsense=1)
            r = await aim.step("true", env={"A": "1"}, timeout=2)
            assert r.ok and (r.tag, r.tag_not_set) == (None, None)

    asyncio.run(main())
    assert [q[0] for q in f.requests] == ["POST"]  # only the good step was sent
    assert json.loads(f.requests[0][3]) == {"command": "true", "image": IMG, "shell": True, "disposable": True,
                                            "env": {"A": "1"}, "timeout": 2}


def _held_step_server(fake: Any) -> Tuple[Any, threading.Event]:
    """A server whose ?wait= spawn sends its Location at once, then holds the
    body until the run is cancelled (DELETE) or 10 s pass."""
    deleted = threading.Event()

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "DELETE":
            deleted.set()
            return 202, {}, b""
        if m == "POST":
            def held(handler: Any) -> None:
                body = json.dumps(_op_json("CANCELLED", -1, "")).encode()
                handler.send_response(201)
                handler.send_header("Location", f"/v1/operations/{OP}")
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.flush()
                deleted.wait(10)
                handler.wfile.write(body)
            return held
        return js(200, _op_json("CANCELLED", -1, ""))

    return fake(h), deleted


def test_async_step_cancel_does_not_queue_behind_the_pool(fake: Any) -> None:
    # One worker, busy with the very step to cancel: the DELETE must not
    # wait for it (it would wait until the run ended by itself).
    from arbor.aio import AsyncClient

    f, deleted = _held_step_server(fake)

    async def main() -> float:
        async with AsyncClient(url=f.url, token="t", max_workers=1) as c:
            task = asyncio.create_task(c.step(IMG, "sleep 60"))
            while not any(q[0] == "POST" for q in f.requests):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the Location has been read: the step knows its run
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.get_running_loop().run_in_executor(None, deleted.wait, 5)
            return time.monotonic() - t0

    took = asyncio.run(main())
    assert deleted.is_set() and took < 3, took


def test_async_step_cancel_after_close_stays_cancelled(fake: Any) -> None:
    # A client closed meanwhile (its pool shut down): cancelling the task
    # still raises CancelledError, not the pool's RuntimeError.
    from arbor.aio import AsyncClient

    f, deleted = _held_step_server(fake)

    async def main() -> None:
        c = AsyncClient(url=f.url, token="t")
        task = asyncio.create_task(c.step(IMG, "sleep 60"))
        while not any(q[0] == "POST" for q in f.requests):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        await c.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert deleted.wait(5)


def test_result_step_chains(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(201, _op_json(image=IMG2), Location=f"/v1/operations/{OP}"))
    c = client_for(f)
    r = c.step(IMG, "echo a > /f", disposable=False)
    assert r.image is not None and r.image.uuid == IMG2
    r.step("cat /f")
    assert json.loads(f.requests[-1][3])["image"] == IMG2


# -- tag=: result_tag, set by the server as it records the run -----------------------


def _line() -> int:
    """The caller's current line: ``here = _line(); call()`` on one line."""
    return sys._getframe(1).f_lineno


class _TagServer:
    """A fake arbor that records tags. With ``result_tag`` it applies the
    server's rule (exit 0 and a new image) and reports the operation's
    ``result.tag``; without it (an older server) it ignores the field."""

    def __init__(self, fake: Any, result_tag: bool = True) -> None:
        self.result_tag = result_tag
        self.tags: Dict[str, str] = {IMG: "input-tag"}
        self.exit, self.image = 0, IMG2
        self.patch_status = 200
        self.f = fake(self.handle)
        self.c = client_for(self.f)

    def handle(self, m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "PATCH":
            if self.patch_status != 200:
                return js(self.patch_status, {"error": "the store is read-only"})
            u = p.split("/")[3]
            self.tags[u] = json.loads(b)["tag"]
            return js(200, {"uuid": u, "tag": self.tags[u]})
        if p.startswith("/v1/inspect/"):
            u = p.split("/")[3]
            return js(200, {"uuid": u, "tag": self.tags.get(u)})
        op = _op_json(exit_code=self.exit, image=self.image)
        op["result"] = {"image": self.image, "tag": None}
        want = json.loads(b).get("result_tag") if m == "POST" else None
        if self.result_tag and want and self.exit == 0 and self.image not in (None, IMG):
            self.tags[self.image] = want
            op["result"]["tag"] = want
        return js(201, op, Location=f"/v1/operations/{OP}?wait=1")

    def methods(self) -> List[str]:
        return [q[0] + " " + q[1].split("?")[0] for q in self.f.requests]


def test_tag_is_sent_as_result_tag(fake: Any) -> None:
    s = _TagServer(fake)
    im = s.c.images.use(IMG)
    r = im.step("echo 1 > /f", tag="proj/v1")
    body = json.loads(s.f.requests[0][3])
    assert body["result_tag"] == "proj/v1" and body["disposable"] is False
    assert (r.tag, r.tag_not_set) == ("proj/v1", None) and s.tags[IMG2] == "proj/v1"
    assert s.methods() == ["POST /v1/instances"]  # a tagged step is one request: no GET, no PATCH
    # A failed command and an unchanged image keep their tags, the input's
    # own or none: nothing is tagged by the client either, with a warning.
    for exit_code, image, why in ((3, IMG2, "the command exited 3"), (0, IMG, "the run changed nothing")):
        s.exit, s.image, s.tags = exit_code, image, {}
        n = len(s.f.requests)
        with pytest.warns(UserWarning, match=f"tag 't' not set: {why}"):
            r = im.run("x", tag="t").wait()
        assert r.tag is None and r.tag_not_set is not None and why in r.tag_not_set
        assert s.tags == {} and s.methods()[n:] == ["POST /v1/instances"], s.methods()[n:]
        assert r.exit_code == exit_code and r.image is not None and r.image.uuid == image  # the result stands


def test_tag_fallback_on_a_server_without_result_tag(fake: Any) -> None:
    s = _TagServer(fake, result_tag=False)
    im = s.c.images.use(IMG)
    r = im.step("echo 1 > /f", tag="t")
    assert (r.tag, r.tag_not_set) == ("t", None) and s.tags[IMG2] == "t"
    assert s.methods() == ["POST /v1/instances", f"PATCH /v1/images/{IMG2}/tag"]
    # The same rule as the server's: no tag on an unchanged input, tagged or not.
    s.image, s.tags = IMG, {}
    n = len(s.f.requests)
    with pytest.warns(UserWarning, match="changed nothing"):
        r = im.run("true", tag="t").wait()
    assert s.tags == {} and s.methods()[n:] == ["POST /v1/instances"]
    # A tagging failure does not throw the run's result away.
    s.image, s.patch_status = IMG2, 500
    with pytest.warns(UserWarning, match=f"tag 't' not set: the run succeeded but tagging its image {IMG2} failed"):
        r = im.step("echo 2 > /f", tag="t")
    assert r.ok and r.stdout == "hi\n" and r.tag is None and "read-only" in (r.tag_not_set or "")


def test_tag_name_checked_before_anything_runs(fake: Any) -> None:
    f = fake(lambda m, p, h, b: js(500, {"error": "no request was expected"}))
    im = client_for(f).images.use(IMG)
    for bad in ("", "-x", ".x", "a b", "tag:x", "x" * 256, "caf\u00e9", "a\n", "x!"):
        for call in (lambda: im.run("true", tag=bad, files={"/f": b"uploaded first?"}), lambda: im.step("true", tag=bad)):
            with pytest.raises(ValueError, match="invalid tag"):
                call()
    with pytest.raises(ValueError, match="cannot be disposable=True"):
        im.run("true", tag="t", disposable=True)
    assert f.requests == []
    ok = fake(lambda m, p, h, b: js(201, {"uuid": OP}))
    im = client_for(ok).images.use(IMG)
    for good in ("a" * 255, "0", "proj/v1:2@x+y-z_.A", "ab-tag:x"):
        im.run("true", tag=good)
        assert json.loads(ok.requests[-1][3])["result_tag"] == good


def test_tag_warning_points_at_the_callers_line(fake: Any) -> None:
    import warnings

    s = _TagServer(fake)
    s.image = IMG  # unchanged: every tag= below warns
    c = s.c
    im = c.images.use(IMG)
    seen: List[Tuple[str, int, int]] = []

    def check(what: str, here: int, w: List[warnings.WarningMessage]) -> None:
        assert len(w) == 1, (what, [str(x.message) for x in w])
        seen.append((what, w[0].lineno, here))
        assert (w[0].filename, w[0].lineno) == (__file__, here), (what, w[0].filename, w[0].lineno, here)

    cases: List[Tuple[str, Callable[[], Any]]] = [
        ("run().wait()", lambda: im.run("true", tag="t").wait()),
        ("step()", lambda: im.step("true", tag="t")),
        ("Client.step()", lambda: c.step(IMG, "true", tag="t")),
        ("branch()", lambda: arbor.branch(im, ["true"], tag="t")),
        ("Image.branch()", lambda: im.branch(["true"], tag="t")),
        ("Result.step()", lambda: arbor.Result._from_operation(arbor.Operation(c, OP), _op_json(image=IMG)).step("true", tag="t")),
    ]
    for what, call in cases:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            call()
        # Each call is on its lambda's line, in this file: the warning must land there.
        check(what, call.__code__.co_firstlineno, w)
    s.exit = 3  # a failed command with check=True: the warning, then CommandFailed
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(arbor.CommandFailed) as ei:
            here = _line(); im.run("x", tag="t", check=True).wait()  # noqa: E702
    check("check=True", here, w)
    assert "exited 3" in (ei.value.result.tag_not_set or "")
    s.exit = 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ops = [im.run("true", tag="t")]
        here = _line(); got = list(arbor.as_completed(ops))  # noqa: E702
    assert len(got) == 1
    check("as_completed", here, w)
    # Once per result: waiting again says nothing new.
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ops[0].wait()
    assert w == []


def test_async_tag_warning_points_at_the_await(fake: Any) -> None:
    import warnings

    from arbor.aio import AsyncClient

    s = _TagServer(fake)
    s.image = IMG

    async def main() -> List[Tuple[int, int]]:
        out: List[Tuple[int, int]] = []
        async with AsyncClient(url=s.f.url, token="t", retry=FAST) as c:
            img = await c.images.use(IMG)
            for n in range(3):
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    if n == 0:
                        here = _line(); r = await img.step("true", tag="t")  # noqa: E702
                    elif n == 1:
                        op = await img.run("true", tag="t")
                        here = _line(); r = await op.wait()  # noqa: E702
                    else:
                        here = _line(); r = (await img.branch(["true"], tag="t"))[0]  # noqa: E702
                assert r.tag is None and "changed nothing" in r.tag_not_set
                assert len(w) == 1 and w[0].filename == __file__, [(x.filename, str(x.message)) for x in w]
                out.append((w[0].lineno, here))
        return out

    for got, want in asyncio.run(main()):
        assert got == want


# -- fan-out -----------------------------------------------------------------------


def _slow_ops(fake: Any, done: List[str]) -> Tuple[arbor.Client, List[arbor.Operation]]:
    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        u = p.split("?")[0].split("/")[3]
        if m == "DELETE":
            return 202, {}, b""
        if u in done:
            return js(200, {**_op_json(), "uuid": u})
        if "wait=" in p:
            time.sleep(min(0.2, float(urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)["wait"][0][:-1])))
        if "/events" in p:
            return js(405, {"error": "no events"})
        return js(200, {**_op_json("EXECUTING", -1, ""), "uuid": u})

    c = client_for(fake(h))
    ids = [OP, IMG, IMG2]
    return c, [arbor.Operation(c, u) for u in ids]


def test_as_completed_break_returns_at_once(fake: Any) -> None:
    c, ops = _slow_ops(fake, [IMG])
    t0 = time.monotonic()
    for r in arbor.as_completed(ops):
        assert r.operation_id == IMG
        break  # the two others never finish
    assert time.monotonic() - t0 < 2


def test_as_completed_timeout_names_the_unfinished(fake: Any) -> None:
    c, ops = _slow_ops(fake, [OP])
    got: List[str] = []
    with pytest.raises(arbor.WaitTimeout) as ei:
        for r in arbor.as_completed(ops, timeout=0.5):
            got.append(r.operation_id)
    assert got == [OP]
    assert {o.id for o in ei.value.operations} == {IMG, IMG2} and ei.value.operation.id in (IMG, IMG2)
    assert IMG in str(ei.value) and IMG2 in str(ei.value) and OP not in str(ei.value)


def test_branch_cancels_the_op_it_was_waiting_for(fake: Any) -> None:
    n = {"spawned": 0}
    ids = [OP, IMG2]

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if m == "POST":
            n["spawned"] += 1
            return js(201, {"uuid": ids[n["spawned"] - 1]})
        if m == "DELETE":
            return 202, {}, b""
        if "/events" in p:
            return js(405, {"error": "no events"})
        return js(200, _op_json("EXECUTING", -1, ""))

    f = fake(h)
    with pytest.raises(arbor.WaitTimeout):
        client_for(f).branch(IMG, ["sleep 60", "sleep 60"], wait_timeout=0.3)
    assert sorted(q[1] for q in f.requests if q[0] == "DELETE") == sorted(f"/v1/operations/{u}" for u in ids)


# -- downloads ---------------------------------------------------------------------


def test_download_into_new_dir_and_no_part_left(fake: Any, tmp_path: Path) -> None:
    state = {"cut": False}

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if not state["cut"]:
            return 200, {"Content-Type": "application/octet-stream"}, b"content"
        return _cut(200, {}, 1000, b"partial")

    im = client_for(fake(h)).images.use(IMG)
    out = im.download("/etc/app.conf", str(tmp_path / "new" / "dir") + "/")
    assert out == tmp_path / "new" / "dir" / "app.conf" and out.read_bytes() == b"content"
    tar = im.archive("/w", str(tmp_path / "tars") + "/")
    assert tar == tmp_path / "tars" / "w.tar"
    state["cut"] = True
    for fetch in (lambda: im.download("/etc/app.conf", tmp_path / "x.conf"), lambda: im.archive("/w", tmp_path / "x.tar")):
        with pytest.raises(arbor.ConnectionFailed, match="broke off"):
            fetch()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "tars"]  # no x.conf(.part), no x.tar(.part)


# -- image references --------------------------------------------------------------


def test_use_uuid_prefix(fake: Any) -> None:
    listed = [{"uuid": IMG, "tag": None}, {"uuid": IMG2, "tag": None}, {"uuid": OP, "tag": None}]

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if p.startswith("/v1/inspect/"):
            return js(404, {"error": "no image has that tag"})
        return js(200, {"images": listed})  # as a server that ignores uuid_prefix

    f = fake(h)
    c = client_for(f)
    im = c.images.use("1111")
    assert im.uuid == OP and f.requests[-1][1].startswith("/v1/images?uuid_prefix=1111")
    assert im.raw["uuid"] == OP and len(f.requests) == 2  # the listing's metadata, no third request
    assert c.images.use("AAAAAAAA-BBBB-CCCC-DDDD-E").uuid == IMG  # either case
    with pytest.raises(arbor.ArborError, match="ambiguous: it matches 2 images .*type more characters"):
        c.images.use("aaaa")
    with pytest.raises(arbor.NotFound, match="or a uuid starting with it"):
        c.images.use("cccc")
    n = len(f.requests)
    for ref in ("tag:1111", "ccc", "no-hex-here"):  # explicit tags and non-prefixes are tags only
        with pytest.raises(arbor.NotFound):
            c.images.use(ref)
    assert all(q[1].startswith("/v1/inspect/") for q in f.requests[n:])


def unfiltered_images(n: int, uuids: Dict[int, str]) -> Callable[..., Any]:
    """A handler like ConTree's server: ``GET /v1/images`` ignores
    uuid_prefix and serves pages by limit (1..1000, default 100) and offset;
    no image has a tag. Image i's uuid starts with "1" unless ``uuids``
    names it."""
    listed = [{"uuid": uuids.get(i, f"1{i:07x}-0000-4000-8000-000000000000"), "tag": None} for i in range(n)]

    def h(m: str, p: str, hd: Dict[str, str], b: bytes) -> Any:
        if p.startswith("/v1/inspect/"):
            return js(404, {"error": "no image has that tag"})
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)
        limit, offset = int(q.get("limit", ["100"])[0]), int(q.get("offset", ["0"])[0])
        if not 1 <= limit <= 1000:
            return js(400, {"error": "limit must be between 1 and 1000"})
        return js(200, {"images": listed[offset:offset + limit]})

    return h


def test_use_uuid_prefix_pages_unfiltered_server(fake: Any) -> None:
    a, b = "beef0001-0000-4000-8000-00000000000a", "beef0002-0000-4000-8000-00000000000b"

    def lists(f: Fake) -> List[str]:
        return [q[1] for q in f.requests if q[1].startswith("/v1/images")]

    # A match past the first page: every page up to the end is read.
    f = fake(unfiltered_images(3000, {2500: a}))
    assert client_for(f).images.use("beef").uuid == a
    assert len(lists(f)) == 4 and "uuid_prefix=beef" in lists(f)[0] and "offset=2100" in lists(f)[-1]

    # Two matches on different pages: ambiguous, and the search stops there.
    f = fake(unfiltered_images(5000, {50: a, 1500: b}))
    with pytest.raises(arbor.ArborError, match=f"ambiguous: it matches at least 2 images \\({a}, {b}\\): type more"):
        client_for(f).images.use("beef")
    assert len(lists(f)) == 3
    f = fake(unfiltered_images(3000, {300: a, 2800: b}))
    with pytest.raises(arbor.ArborError, match="ambiguous: it matches 2 images"):
        client_for(f).images.use("beef")
    assert client_for(f).images.use("beef0002").uuid == b

    # None anywhere: not found, as before.
    f = fake(unfiltered_images(2100, {}))
    with pytest.raises(arbor.NotFound, match="or a uuid starting with it"):
        client_for(f).images.use("beef")

    # More images than the search's bound: an error saying what to pass.
    scanned = 100 + arbor.client.Images._SCAN_PAGES * arbor.client.Images._SCAN_PAGE
    f = fake(unfiltered_images(scanned + 1, {7: a}))
    with pytest.raises(arbor.ArborError, match=f"more images than the {scanned} searched \\({a} matches.*pass the full uuid or a tag"):
        client_for(f).images.use("beef")
    assert len(lists(f)) == 1 + arbor.client.Images._SCAN_PAGES


# -- asyncio -----------------------------------------------------------------------


def test_async_result_methods_are_awaitable() -> None:
    import inspect

    from arbor.aio import AsyncResult

    for name, attr in vars(arbor.Result).items():
        if name.startswith("_") or isinstance(attr, property) or not callable(attr):
            continue
        assert inspect.iscoroutinefunction(getattr(AsyncResult, name, None)), f"AsyncResult.{name} is not async"
    r = arbor.Result._from_operation(arbor.Operation(None, OP, kind="instance"), _op_json())  # type: ignore[arg-type]
    ar = AsyncResult(r, None)  # type: ignore[arg-type]
    assert (ar.exit_code, ar.stdout, ar.ok, ar.operation_id) == (0, "hi\n", True, OP)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ar.nope
    assert asyncio.run(ar.check()) is ar


# -- packaging ------------------------------------------------------------------


def test_build_backend_wheel(tmp_path: Path) -> None:
    sys.path.insert(0, str(PYDIR / "_build"))
    try:
        import arbor_build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    name = arbor_build.build_wheel(str(tmp_path))
    assert name == f"arbor_sdk-{arbor.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as z:
        names = set(z.namelist())
        assert {"arbor/__init__.py", "arbor/py.typed", "arbor/aio.py",
                f"arbor_sdk-{arbor.__version__}.dist-info/METADATA",
                f"arbor_sdk-{arbor.__version__}.dist-info/RECORD"} <= names
        assert not any("__pycache__" in n for n in names)
        record = z.read(f"arbor_sdk-{arbor.__version__}.dist-info/RECORD").decode()
        assert "arbor/__init__.py,sha256=" in record
    sd = arbor_build.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / sd) as tf:
        assert f"arbor_sdk-{arbor.__version__}/pyproject.toml" in tf.getnames()


def test_pip_install_offline(tmp_path: Path) -> None:
    """`pip install --no-index ./python` works in a fresh venv: nothing is fetched."""
    venv = tmp_path / "v"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv with pip here: {made.stderr.strip()[-300:]}")
    py = venv / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", str(PYDIR)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    out = subprocess.run([str(py), "-c", "import arbor, arbor.aio, arbor.testing; print(arbor.__version__, arbor.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    version, where = out.stdout.split()
    assert version == arbor.__version__ and str(venv) in where
    assert (Path(where).parent / "py.typed").exists()


def test_type_checking_imports_resolve() -> None:
    """Names imported only for type checkers exist (a checker would
    otherwise fail on the package, and annotations would not resolve)."""
    import ast
    import importlib

    for path in sorted((PYDIR / "arbor").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                continue
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), f"{path.name}: unexpected {ast.dump(imp)}"
                mod = importlib.import_module("." * imp.level + (imp.module or ""), "arbor")
                for alias in imp.names:
                    assert hasattr(mod, alias.name), f"{path.name}: {mod.__name__} has no {alias.name}"
