"""Every public method against a real arbor daemon (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

import arbor
from arbor import Client, Image, Result
from arbor.aio import AsyncClient


# -- the brief's workflow ---------------------------------------------------------


def test_brief_workflow(daemon: Any, base: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    # Client() finds the daemon by itself through ARBOR_HOME (url and token files).
    for k in ("ARBOR_URL", "ARBOR_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ARBOR_HOME", str(daemon.home))
    from conftest import RUNTIME

    c = Client(runtime=RUNTIME)
    b = c.images.use("busybox")
    assert b.uuid == base.uuid
    env = b.run(shell="mkdir -p /w && echo base > /w/s", disposable=False).wait()
    assert env.exit_code == 0 and env.image is not None
    runs = {n: env.run(shell=f"echo {n} > /w/{n} && test -f /w/s") for n in ("retry", "pool", "async")}
    verdicts = {n: ("PASS" if op.wait().exit_code == 0 else "FAIL") for n, op in runs.items()}
    assert verdicts == {"retry": "PASS", "pool": "PASS", "async": "PASS"}
    fail = env.run(shell="test -f /w/missing").wait()
    assert fail.exit_code == 1


def test_parallel_runs_are_parallel(base: Image) -> None:
    base.run(shell="true").wait()  # warm up
    t0 = time.monotonic()
    ops = [base.run(shell="sleep 1") for _ in range(3)]
    results = [op.wait() for op in ops]
    wall = time.monotonic() - t0
    assert [r.exit_code for r in results] == [0, 0, 0]
    assert wall < 2.7, f"three 1-second runs took {wall:.2f}s: not parallel"


def test_chaining(env: Result) -> None:
    r1 = env.run(shell="echo one >> /w/log", disposable=False).wait()
    r2 = r1.run(shell="echo two >> /w/log", disposable=False).wait()
    r3 = r2.image.run(shell="cat /w/log /w/s").wait()  # type: ignore[union-attr]
    assert r3.stdout == "one\ntwo\nbase\n"
    assert r2.read_text("/w/log") == "one\ntwo\n"
    assert env.read_text("/w/s") == "base\n"  # the parent never changes


# -- results ---------------------------------------------------------------------


def test_result_fields(base: Image) -> None:
    r = base.run(shell="echo out; echo err >&2; printf '\\377\\376' > /tmp/b; exit 3").wait()
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert r.stdout_bytes == b"out\n" and not r.timed_out and not r.ok
    assert r.status == "SUCCESS" and r.image is None and r.duration > 0
    assert r.operation_id == r.operation.id and isinstance(r.resources, dict) and r.resources
    b = base.run(shell="printf '\\377\\000x'").wait()
    assert b.stdout_bytes == b"\xff\x00x"
    with pytest.raises(arbor.NoImage, match="disposable=False"):
        r.run(shell="true")
    with pytest.raises(arbor.CommandFailed) as ei:
        r.check()
    assert ei.value.result is r
    with pytest.raises(arbor.CommandFailed):
        base.run(shell="exit 2", check=True).wait()


def test_timeout(base: Image) -> None:
    t0 = time.monotonic()
    r = base.run(shell="sleep 30", timeout=1).wait()
    assert r.timed_out and not r.ok
    assert time.monotonic() - t0 < 15


def test_exec_env_cwd_stdin(base: Image) -> None:
    assert base.run(["echo", "a  b", "$HOME"]).wait().stdout == "a  b $HOME\n"
    assert base.run("echo", args=["x"]).wait().stdout == "x\n"
    r = base.run(shell='echo "$GREETING $(pwd)"; cat', env={"GREETING": "hi"}, cwd="/tmp", stdin="from stdin").wait()
    assert r.stdout == "hi /tmp\nfrom stdin"


def test_files(base: Image, client: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("print('mod')\n")
    script = tmp_path / "go.sh"
    script.write_text("#!/bin/sh\necho script ran\n")
    script.chmod(0o755)
    up = client.files.upload(b"uploaded\n")
    r = base.run(
        shell="cat /w/src/pkg/mod.py /w/bytes.txt /w/by-uuid /w/handle && /w/go.sh && stat -c %a /w/ro && cat in-cwd.txt",
        cwd="/w",
        files={
            "/w/src": src,
            "/w/bytes.txt": b"raw bytes\n",
            "/w/by-uuid": up.uuid,
            "/w/handle": up,
            "/w/go.sh": script,
            "/w/ro": arbor.FileSpec(b"secret", mode=0o400),
            "in-cwd.txt": io.BytesIO(b"relative\n"),
        },
    ).wait()
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "print('mod')\nraw bytes\nuploaded\nuploaded\nscript ran\n400\nrelative\n"
    one = tmp_path / "one.txt"
    one.write_text("listed\n")
    assert base.run(shell="cat one.txt", cwd="/tmp", files=[one]).wait().stdout == "listed\n"


# -- files -------------------------------------------------------------------------


def test_upload_dedup(daemon: Any, tmp_path: Path) -> None:
    data = b"dedup me " + uuid.uuid4().bytes
    sha = hashlib.sha256(data).hexdigest()
    c1 = Client(url=daemon.url, token=daemon.token)
    assert not c1.files.exists(sha)
    a = c1.files.upload(data)
    assert (a.sha256, a.size) == (sha, len(data)) and c1.files.exists(sha)
    assert c1.files.get(sha).uuid == a.uuid
    c2 = Client(url=daemon.url, token=daemon.token)  # no local cache
    sent: List[str] = []
    orig = c2._t.request

    def spy(method: str, path: str, **kw: Any) -> Any:
        sent.append(f"{method} {path}")
        return orig(method, path, **kw)

    c2._t.request = spy  # type: ignore[method-assign]
    p = tmp_path / "same.bin"
    p.write_bytes(data)
    assert c2.files.upload(p).uuid == a.uuid
    with open(p, "rb") as f:
        assert c2.files.upload(f).uuid == a.uuid
    assert not any(s.startswith("POST") for s in sent), sent
    assert any(f.sha256 == sha for f in c1.files.list())
    with pytest.raises(arbor.NotFound):
        c1.files.get("0" * 64)


# -- images ------------------------------------------------------------------------


def test_images_list_get_use(client: Client, base: Image, env: Result) -> None:
    all_ = client.images.list()
    uuids = {i.uuid for i in all_}
    assert base.uuid in uuids and env.image.uuid in uuids  # type: ignore[union-attr]
    assert [i.uuid for i in client.images.list(tag="busy")][:1] == [base.uuid]
    assert all(i.tag for i in client.images.list(tagged=True))
    assert len(client.images.list(limit=1)) == 1
    assert client.images.list(since="1h") and not client.images.list(until="1h")
    got = client.images.get("busybox")
    assert got.uuid == base.uuid and got.tag == "busybox" and got.created_at
    assert client.images.get(base.uuid).tag == "busybox"
    assert client.images.use(f"tag:busybox").uuid == base.uuid
    assert client.image(env).uuid == env.image.uuid  # type: ignore[union-attr]
    child = client.images.get(env.image.uuid)  # type: ignore[union-attr]
    assert child.parent_uuid == base.uuid and child.parent == base and child.depth >= 2
    assert child.operation_uuid == env.operation_id
    assert child.operation == env.operation and base.operation is None


def test_tag_untag_delete(client: Client, env: Result) -> None:
    r = env.run(shell="echo t > /t", disposable=False).wait()
    im = r.image
    assert im is not None
    name = f"test/ckpt-{uuid.uuid4().hex[:8]}:v1"
    assert client.images.tag(im, name).tag == name
    assert client.images.use(name) == im
    # run(tag=...) tags the result, moving the tag.
    r2 = im.run(shell="echo 2 > /t2", tag=name).wait()
    assert r2.image is not None and client.images.get(name) == r2.image
    assert client.images.untag(name).tag is None
    with pytest.raises(arbor.NotFound):
        client.images.use(name)
    assert im.set_tag(name).tag == name and im.untag().tag is None
    client.images.delete(r2.image)
    with pytest.raises(arbor.NotFound):
        client.images.get(r2.image.uuid)
    assert im.read_text("/t") == "t\n"  # a parent survives its child's deletion


def test_import_image_ops(client: Client) -> None:
    from arbor.testing import busybox_tar

    up = client.files.upload(busybox_tar())
    op = client.images.import_image(f"upload://{up.uuid}", tag="busybox-copy", wait=False)
    assert isinstance(op, arbor.Operation) and op.kind == "image_import"
    res = op.wait(60)
    assert res.exit_code == 0 and res.image is not None
    assert client.images.get("busybox-copy") == res.image
    with pytest.raises(arbor.BadRequest):
        client.images.import_image("ftp://nowhere/x")


# -- inspect -----------------------------------------------------------------------


def test_inspect(client: Client, base: Image, env: Result, tmp_path: Path) -> None:
    names = {e.name: e for e in base.ls("/bin")}
    assert names["busybox"].is_file and names["sh"].is_symlink and names["sh"].symlink_to == "busybox"
    root = {e.name: e for e in base.ls()}
    assert root["etc"].is_dir and root["etc"].path == "/etc"
    assert "passwd" in base.ls_text("/etc")
    assert base.read_text("/etc/passwd").startswith("root:")
    assert base.read("/bin/busybox")[:4] == b"\x7fELF"
    assert base.exists("/etc/passwd") and base.exists("/etc") and not base.exists("/nope")
    with pytest.raises(arbor.NotFound):
        base.read("/etc/nope")
    out = base.download("/etc/passwd", tmp_path)
    assert out == tmp_path / "passwd" and out.read_text().startswith("root:")
    tar = env.image.archive("/w")  # type: ignore[union-attr]
    assert isinstance(tar, bytes)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert any(n.rstrip("/").endswith("s") for n in tf.getnames())
    saved = env.image.archive("/w", tmp_path / "w.tar")  # type: ignore[union-attr]
    assert Path(saved).stat().st_size > 0
    dest = env.image.archive("/etc", tmp_path / "etc", extract=True)  # type: ignore[union-attr]
    assert (Path(dest) / "passwd").read_text().startswith("root:")
    g = base.grep("root", "/etc/passwd")
    assert g.path == "/etc/passwd" and g.matches and g.matches[0].line_number == 1 and g.files == ["/etc/passwd"]
    g2 = base.grep(["nobody", "daemon"], "/etc", glob="pass*", case="insensitive")
    assert {m.line_text.split(":")[0] for m in g2} == {"nobody", "daemon"}
    assert len(base.grep("no-such-text-anywhere", "/etc")) == 0


def test_diff_and_lineage(base: Image, env: Result) -> None:
    a = env.run(shell="echo changed > /w/s && echo new > /w/n && rm -f /etc/group", disposable=False).wait()
    assert a.image is not None
    d = env.image.diff(a.image)  # type: ignore[union-attr]
    kinds = {c.path: c.kind for c in d}
    assert kinds["/w/s"] == "modified" and kinds["/w/n"] == "added" and kinds["/etc/group"] == "deleted"
    mod = next(c for c in d if c.path == "/w/s")
    assert "-base" in mod.diff and "+changed" in mod.diff
    assert d.paths("added") == ["/w/n"] and d.from_uuid == env.image.uuid and d.to_uuid == a.image.uuid  # type: ignore[union-attr]
    assert [c.path for c in a.diff()] == [c.path for c in d]  # input → result
    assert {c.path for c in a.image.diff()} == set(kinds)  # against its parent
    assert {c.path for c in env.image.diff(a.image, path="/w")} == {"/w/s", "/w/n"}  # type: ignore[union-attr]
    lin = a.image.lineage()
    assert [i.uuid for i in lin.ancestors] == [env.image.uuid, base.uuid]  # type: ignore[union-attr]
    assert lin.root == base and lin.image == a.image
    assert lin.ancestors[0].operation is not None and lin.ancestors[0].operation.status == "SUCCESS"
    assert a.image in env.image.lineage().children  # type: ignore[union-attr]


# -- operations --------------------------------------------------------------------


def test_operations_get_list(client: Client, base: Image) -> None:
    op = base.run(shell="echo listed")
    r = op.wait()
    got = client.operations.get(op.id)
    assert got.status == "SUCCESS" and got.kind == "instance" and got.image == base
    assert got.done() and got.wait().stdout == "listed\n"
    listed = {o.id: o for o in client.operations.list(limit=1000)}
    assert listed[op.id].status == "SUCCESS" and listed[op.id].wait().stdout == "listed\n"
    assert all(o.kind == "instance" for o in client.operations.list(kind="instance"))
    assert op.id in [o.id for o in client.operations.list(status="SUCCESS", kind="instance", limit=None)]
    assert all(o.kind == "image_import" for o in client.operations.list(kind="image_import"))
    assert client.operations.wait(op.id).stdout == r.stdout
    with pytest.raises(arbor.NotFound):
        client.operations.get(str(uuid.uuid4()))


def test_cancel(client: Client, base: Image) -> None:
    op = base.run(shell="sleep 30")
    assert op.cancel() is True
    with pytest.raises(arbor.OperationCancelled):
        op.wait(20)
    assert op.status == "CANCELLED"
    assert client.operations.cancel(op.id) is False  # already finished: 409 → False


def test_wait_timeout_keeps_running(base: Image) -> None:
    op = base.run(shell="sleep 3")
    t0 = time.monotonic()
    with pytest.raises(arbor.WaitTimeout):
        op.wait(timeout=0.5)
    assert time.monotonic() - t0 < 2.5
    assert op.wait().exit_code == 0


def test_events(client: Client, base: Image) -> None:
    op = base.run(shell="echo one; sleep 0.3; echo two >&2")
    live = list(op.events())
    types = [e.type for e in live]
    assert types[-1] == "completion" and "exit" in types and types.count("completion") == 1
    assert [e.id for e in live] == sorted(e.id for e in live)
    out = "".join(e.text for e in live if e.type == "stdout")
    err = "".join(e.text for e in live if e.type == "stderr")
    assert (out, err) == ("one\n", "two\n")
    exit_ev = next(e for e in live if e.type == "exit")
    assert exit_ev.spid == 1 and exit_ev.data["code"] == 0
    # Replay of a finished operation, with and without follow.
    assert [e.id for e in op.events()] == [e.id for e in live]
    assert [e.id for e in op.events(follow=False)] == [e.id for e in live]
    # Resume after an event id: exclusive.
    k = live[1].id
    assert [e.id for e in client.operations.events(op.id, since=k)] == [e.id for e in live if e.id > k]
    only1 = list(op.events(spid=1))
    assert only1[-1].type == "completion" and all(e.spid == 1 for e in only1[:-1]) and len(only1) > 1
    chunks = list(base.run(shell="echo live").output())
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"live\n"


def test_events_resume_after_dropped_connection(base: Image) -> None:
    """Cut the stream after every event: the iterator reconnects with
    Last-Event-Id each time and still yields each event exactly once."""
    op = base.run(shell="for i in 1 2 3; do echo $i; sleep 0.1; done")
    t = op._c._t
    orig = t.request
    resumes: List[str] = []

    def cutting(method: str, path: str, **kw: Any) -> Any:
        resp = orig(method, path, **kw)
        if path.endswith("/events"):
            resumes.append(kw.get("headers", {}).get("Last-Event-Id", ""))
            real = resp.readline
            state = {"frames": 0}

            def readline() -> bytes:
                if state["frames"] >= 1:
                    raise ConnectionResetError("cut by the test")
                line = real()
                if line in (b"\n", b"\r\n"):
                    state["frames"] += 1
                return line

            resp.readline = readline
        return resp

    t.request = cutting  # type: ignore[method-assign]
    try:
        evs = list(op.events())
    finally:
        del t.request
    ids = [e.id for e in evs]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    assert evs[-1].type == "completion"
    assert "".join(e.text for e in evs if e.type == "stdout") == "1\n2\n3\n"
    assert len(resumes) >= 3 and resumes[0] == "" and resumes[1] != ""


# -- fan-out -----------------------------------------------------------------------


def test_branch(client: Client, env: Result) -> None:
    t0 = time.monotonic()
    res = arbor.branch(env.image, ["sleep 1; echo a", ["echo", "b"], {"shell": "echo $X", "env": {"X": "c"}}])  # type: ignore[arg-type]
    assert [r.stdout for r in res] == ["a\n", "b\n", "c\n"]
    assert time.monotonic() - t0 < 2.7
    kept = env.branch([f"echo {i} > /w/cand" for i in range(3)], disposable=False)
    assert [r.read_text("/w/cand") for r in kept] == ["0\n", "1\n", "2\n"]
    assert [r.stdout for r in client.branch("busybox", ["echo x"])] == ["x\n"]
    done = list(arbor.as_completed([env.run(shell="sleep 0.6; echo slow"), env.run(shell="echo fast")]))
    assert [r.stdout for r in done] == ["fast\n", "slow\n"]


# -- step(): a run and its wait in one request --------------------------------------


def _requests(client: Client, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Record every request the client sends (method and path)."""
    seen: List[str] = []
    request = client._t.request

    def spy(method: str, path: str, **kw: Any) -> Any:
        seen.append(f"{method} {path}")
        return request(method, path, **kw)

    monkeypatch.setattr(client._t, "request", spy)
    return seen


def test_step_is_one_request(client: Client, base: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _requests(client, monkeypatch)
    r = base.step("echo out; echo err >&2; exit 3")
    assert seen == ["POST /v1/instances"]
    want = base.run("echo out; echo err >&2; exit 3").wait()  # the same result as wait()
    for attr in ("status", "exit_code", "stdout", "stderr", "timed_out", "signal", "image"):
        assert getattr(r, attr) == getattr(want, attr), attr
    assert r.operation.status == "SUCCESS" and r.duration > 0 and r.resources
    # Steps chain, each one request.
    seen.clear()
    s1 = base.step("mkdir -p /s && echo one > /s/f", disposable=False)
    s2 = s1.step("cat /s/f; echo two >> /s/f", disposable=False)
    assert seen == ["POST /v1/instances"] * 2
    assert s2.stdout == "one\n" and s2.read_text("/s/f") == "one\ntwo\n"
    assert client.step("busybox", ["echo", "x"]).stdout == "x\n"
    with pytest.raises(arbor.CommandFailed):
        base.step("exit 4", check=True)
    # A tagged step too: the daemon tags as it records the run.
    name = f"test/step-{uuid.uuid4().hex[:8]}"
    seen.clear()
    s3 = s2.step("echo three >> /s/f", tag=name)
    assert seen == ["POST /v1/instances"] and s3.tag == name and client.images.use(name) == s3.image
    s3.image.untag()  # type: ignore[union-attr]


def test_step_waits_longer_than_the_servers_wait(base: Image, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import arbor.objects

    monkeypatch.setattr(arbor.objects, "_LONG_POLL", 0.3)  # the spawn's wait runs out first
    seen = _requests(client, monkeypatch)
    r = base.step("sleep 1.2; echo late")
    assert r.stdout == "late\n"
    assert seen[0] == "POST /v1/instances" and seen[1].startswith("GET /v1/operations/"), seen
    assert "POST /v1/instances" not in seen[1:]


def test_step_timeout_cancels(base: Image) -> None:
    t0 = time.monotonic()
    with pytest.raises(arbor.WaitTimeout) as ei:
        base.step("sleep 30", wait_timeout=1)
    assert time.monotonic() - t0 < 5
    with pytest.raises(arbor.OperationCancelled):
        ei.value.operation.wait(20)


def test_spawn_bad_wait_spawns_nothing(client: Client, base: Image) -> None:
    before = {o.id for o in client.operations.list(limit=None)}
    with pytest.raises(arbor.BadRequest, match="wait"):
        client._t.request("POST", "/v1/instances", params={"wait": "soon"}, json={"command": "true", "image": base.uuid})
    assert {o.id for o in client.operations.list(limit=None)} == before


def test_run_tag_rules(client: Client, base: Image, env: Result) -> None:
    import warnings

    name = f"test/tag-{uuid.uuid4().hex[:8]}"
    with pytest.warns(UserWarning, match=f"tag '{name}' not set: the command exited 1") as w:
        failed = env.run(shell="echo x > /x; exit 1", tag=name).wait()
    assert w[0].filename == __file__  # the warning points at the caller
    assert failed.exit_code == 1 and failed.tag is None and "exited 1" in (failed.tag_not_set or "")
    with pytest.raises(arbor.NotFound):
        client.images.use(name)  # a failed run is not tagged
    # A run that changes nothing returns its input, which is not tagged:
    # busybox keeps its tag, and an untagged input stays untagged.
    untagged = env.image
    assert untagged is not None and untagged.refresh().tag is None
    for im, held in ((base, "busybox"), (untagged, None)):
        with pytest.warns(UserWarning, match="changed nothing"):
            same = im.step("true", tag=name)
        assert same.image == im and same.tag is None and "changed nothing" in (same.tag_not_set or "")
        assert client.images.get(im.uuid).tag == held
        with pytest.raises(arbor.NotFound):
            client.images.use(name)
    # A command that exits 0 and changes the image: tagged, and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = env.step("echo y > /y", tag=name)
    assert good.tag == name and good.tag_not_set is None and client.images.use(name) == good.image
    assert good.operation.refresh()["result"]["tag"] == name  # the daemon set it
    good.image.untag()  # type: ignore[union-attr]


def test_tag_set_by_the_daemon_even_if_the_client_never_waits(client: Client, env: Result) -> None:
    # The tag moves as the daemon records the run: a client that dies after
    # spawning (here: never waits on its handle) still gets it moved.
    name = f"test/atomic-{uuid.uuid4().hex[:8]}"
    op = env.run(shell="echo a > /atomic", tag=name)
    res = client.operations.wait(op.id)  # another handle, which knows of no tag
    assert res.tag == name and client.images.use(name) == res.image
    res.image.untag()  # type: ignore[union-attr]


def test_tag_grammar_is_the_daemons(client: Client, base: Image) -> None:
    # The client refuses exactly the names the daemon refuses, before
    # anything runs; and tag= with disposable=True is refused by both.
    from arbor.objects import _check_tag

    with pytest.raises(ValueError):
        _check_tag("")  # the daemon reads an empty result_tag as none; tag="" is a mistake
    for name in ("a", "0.x", "p/q:r@s+t-u_v", "x" * 255, "-a", "tag:a", "a b", "x" * 256, "caf\u00e9"):
        try:
            _check_tag(name)
            client_ok = True
        except ValueError:
            client_ok = False
        body = {"command": "true", "image": base.uuid, "disposable": False, "result_tag": name}
        try:
            client._t.request("POST", "/v1/instances", json=body)
            daemon_ok = True
        except arbor.BadRequest:
            daemon_ok = False
        assert client_ok == daemon_ok, name
    with pytest.raises(arbor.BadRequest, match="disposable"):
        client._t.request("POST", "/v1/instances", json={"command": "true", "image": base.uuid,
                                                         "disposable": True, "result_tag": "x"})
    before = {o.id for o in client.operations.list(limit=None)}
    for bad in ({"tag": "a b"}, {"tag": "ok", "disposable": True}):
        with pytest.raises(ValueError):
            base.step("true", **bad)
    assert {o.id for o in client.operations.list(limit=None)} == before


def test_set_tag_keeps_one_tag_per_image(client: Client, env: Result) -> None:
    im = env.run(shell="echo t > /one-tag", disposable=False).wait().image
    assert im is not None
    a, b = (f"test/one-{uuid.uuid4().hex[:8]}" for _ in range(2))
    im.set_tag(a).set_tag(b)
    assert im.refresh().tag == b
    with pytest.raises(arbor.NotFound):
        client.images.use(a)  # as Image.set_tag says: the second tag replaced the first
    im.untag()


def test_branch_cancels_every_run_on_timeout(base: Image) -> None:
    with pytest.raises(arbor.WaitTimeout) as ei:
        base.branch(["sleep 30", "sleep 30"], wait_timeout=1)
    with pytest.raises(arbor.OperationCancelled):
        ei.value.operation.wait(20)  # the run being waited for, too


def test_download_into_new_dir(env: Result, tmp_path: Path) -> None:
    out = env.image.download("/w/s", f"{tmp_path}/new/dir/")  # type: ignore[union-attr]
    assert out == tmp_path / "new" / "dir" / "s" and out.read_text() == "base\n"
    with pytest.raises(arbor.NotFound):
        env.image.download("/w/missing", f"{tmp_path}/other/")  # type: ignore[union-attr]
    assert not (tmp_path / "other").exists()  # nothing made for a file that is not there


def test_use_uuid_prefix(client: Client, env: Result) -> None:
    im = env.image
    assert im is not None
    assert client.images.use(im.uuid[:8]) == im
    assert client.images.use(im.uuid[:13].upper()) == im
    assert client.images.use(f"tag:busybox") == client.images.use("busybox")
    missing = next(p for p in ("0000", "1111", "2222", "3333")
                   if not any(i.uuid.startswith(p) for i in client.images.list()))
    with pytest.raises(arbor.NotFound, match="uuid starting with it"):
        client.images.use(missing)


def test_async_step_and_result_methods(daemon: Any, base: Image) -> None:
    from conftest import RUNTIME
    from arbor.aio import AsyncImage

    name = f"test/async-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with AsyncClient(url=daemon.url, token=daemon.token, runtime=RUNTIME) as c:
            r1 = await c.step("busybox", "mkdir -p /a && echo a > /a/f", disposable=False)
            r2 = await r1.step("echo b >> /a/f", disposable=False)
            assert await r2.read_text("/a/f") == "a\nb\n"
            assert "/a/f" in [ch.path for ch in await r2.diff()]
            assert len(await r2.grep("^b", "/a")) == 1
            assert await r2.check() is r2 and r2.ok and r2.operation.id == r2.operation_id
            img = await r2.set_tag(name)
            assert isinstance(img, AsyncImage) and (await img.info())["tag"] == name
            with pytest.raises(AttributeError):
                r2.no_such_thing
            # Cancelling the awaiting task cancels the run.
            task = asyncio.create_task(c.step("busybox", "sleep 30"))
            await asyncio.sleep(2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            newest = (await c.operations.list(kind="instance", limit=1))[0]
            with pytest.raises(arbor.OperationCancelled):
                await newest.wait(20)
            await img.untag()

    asyncio.run(main())


# -- errors ------------------------------------------------------------------------


def test_errors(daemon: Any, client: Client, base: Image) -> None:
    bad = Client(url=daemon.url, token="not-a-token")
    with pytest.raises(arbor.Unauthorized) as ei:
        bad.whoami()
    assert ei.value.status == 401 and ei.value.message
    with pytest.raises(arbor.NotFound) as nf:
        client.images.use("no-such-tag-" + uuid.uuid4().hex[:6])
    assert nf.value.status == 404
    with pytest.raises(arbor.NotFound):
        client.images.use(str(uuid.uuid4())).run(shell="true")
    with pytest.raises(arbor.NotFound):
        client.images.get(str(uuid.uuid4()))
    with pytest.raises(arbor.BadRequest) as br:
        client.operations.list(status="BOGUS")
    assert "BOGUS" in br.value.message
    with pytest.raises(arbor.BadRequest):
        base.set_tag("")
    with pytest.raises(arbor.BadRequest):
        base.run(shell="true", files={"/x": {"uuid": "not-a-uuid"}})
    with pytest.raises(arbor.ArborError):
        client._t.request("GET", "/v1/no-such-endpoint")


def test_whoami_openapi(client: Client) -> None:
    me = client.whoami()
    assert me["permissions"]["spawn"] is True and "token_uuid" in me
    spec = client.openapi()
    assert "/v1/instances" in spec.get("paths", {})


# -- asyncio -----------------------------------------------------------------------


def test_async_client(daemon: Any, base: Image) -> None:
    from conftest import RUNTIME

    async def main() -> List[str]:
        async with AsyncClient(url=daemon.url, token=daemon.token, runtime=RUNTIME) as c:
            assert (await c.whoami())["permissions"]
            b = await c.images.use("busybox")
            env = await (await b.run(shell="echo a > /f", disposable=False)).wait()
            assert env.exit_code == 0 and env.image is not None
            t0 = time.monotonic()
            ops = [await env.run(shell=f"sleep 1; cat /f; echo {i}") for i in range(3)]
            results = await asyncio.gather(*(op.wait() for op in ops))
            assert time.monotonic() - t0 < 2.7
            assert await env.read_text("/f") == "a\n"
            assert [e.type async for e in ops[0].events()][-1] == "completion"
            br = await env.branch(["echo x", "echo y"])
            assert [r.stdout for r in br] == ["x\n", "y\n"]
            return [r.stdout for r in results]

    assert asyncio.run(main()) == ["a\n0\n", "a\n1\n", "a\n2\n"]


def _wait_stdout(op: arbor.Operation, want: str) -> str:
    out = ""
    for ch in op.output(timeout=60):
        if ch.stream == "stdout" and ch.spid == 1:
            out += ch.text
            if want in out:
                return out
    raise AssertionError(f"stdout {out!r} never held {want!r}")


def test_fork(base: Image) -> None:
    # A shell counting the lines it reads: its count lives only in memory.
    script = 'i=0; while read l; do i=$((i+1)); echo "$l $i"; done'
    op = base.run(shell=script, runtime="runsc", keep_stdin=True, stdin="a\n")
    _wait_stdout(op, "a 1\n")
    fork = op.fork(2)
    assert len(fork.operations) == 2
    assert base.uuid in (fork.image.uuid, fork.image.parent_uuid)
    for i, f in enumerate(fork.operations):
        f.write_stdin(f"f{i}\n", close=True)
        assert f.wait(60).stdout == f"f{i} 2\n"
    op.write_stdin("b\n", close=False)
    _wait_stdout(op, "b 2\n")
    # pause_parent: the parent stays at the fork point until resumed.
    fork = op.fork(pause_parent=True)
    op.write_stdin("c\n", close=True)
    fork.operations[0].write_stdin("y\n", close=True)
    assert fork.operations[0].wait(60).stdout == "y 3\n"
    op.resume()
    assert op.wait(60).stdout == "a 1\nb 2\nc 3\n"
    other = base.run(shell="cat", runtime="runc", keep_stdin=True)
    with pytest.raises(arbor.Conflict, match="runsc"):
        other.fork()
    other.cancel()


def test_checkpoint_restore(base: Image) -> None:
    script = 'i=0; while read l; do i=$((i+1)); echo "$l $i"; done'
    op = base.run(shell=script, runtime="runsc", keep_stdin=True, stdin="a\n")
    _wait_stdout(op, "a 1\n")
    saved = op.checkpoint()
    assert saved.checkpoint_bytes > 0
    op.write_stdin("b\n", close=True)
    assert op.wait(60).stdout == "a 1\nb 2\n"
    # Restored later, twice, after the instance ended: both go on from "a 1".
    for word in ("x", "y"):
        (copy,) = saved.restore()
        copy.write_stdin(f"{word}\n", close=True)
        assert copy.wait(60).stdout == f"{word} 2\n"
    with pytest.raises(arbor.Conflict, match="no memory checkpoint"):
        base.restore()
    saved.delete()


def test_fork_checkpoint_async(daemon: Any, base: Image) -> None:
    # The async surface of live forks and kept checkpoints.
    script = 'i=0; while read l; do i=$((i+1)); echo "$l $i"; done'

    async def main() -> List[str]:
        async with AsyncClient(url=daemon.url, token=daemon.token) as c:
            img = await c.images.use(base.uuid)
            op = await img.run(shell=script, runtime="runsc", keep_stdin=True, stdin="a\n")
            await asyncio.to_thread(_wait_stdout, op.sync, "a 1\n")
            fork = await op.fork(pause_parent=True)
            await op.resume()
            saved = await op.checkpoint()
            assert saved.sync.checkpoint_bytes > 0
            (restored,) = await saved.restore()
            outs = []
            for o, word in ((op.sync, "p"), (fork.operations[0], "f"), (restored.sync, "r")):
                o.write_stdin(f"{word}\n", close=True)
                outs.append((await asyncio.to_thread(o.wait, 60)).stdout)
            await saved.delete()
            return outs

    assert asyncio.run(main()) == ["a 1\np 2\n", "f 2\n", "r 2\n"]


def test_egress_denied(base: Image) -> None:
    # What a policy blocked: a name refused by arbor's resolver and packets to
    # a documentation address dropped on the host side (nothing leaves the host).
    cmd = "nslookup blocked.test 192.0.2.53; nc -w 2 203.0.113.5 80 </dev/null; echo done"
    r = base.run(shell=cmd, allow=["198.51.100.7/32"]).wait(60)
    assert r.stdout.endswith("done\n")
    d = r.egress_denied
    assert d is not None and "blocked.test" in d["refused_names"] and d["dropped_packets"] > 0, d
    assert {"addr": "203.0.113.5", "proto": "tcp", "port": 80} in d["dropped"]
    assert base.run(shell="true", allow=["198.51.100.7/32"]).wait(60).egress_denied is None
    assert base.run(shell="true").wait(60).egress_denied is None
