"""Handles: :class:`Image` (an immutable snapshot you can run and inspect),
:class:`Operation` (a started run or import) and :class:`Result` (a finished
run), plus the fan-out helpers :func:`branch` and :func:`as_completed`."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import http.client
import inspect
import math
import os
import posixpath
import re
import socket
import sys
import tarfile
import threading
import io
import json
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Union,
)

from .errors import (
    ArborError,
    BadRequest,
    CommandFailed,
    Conflict,
    NoImage,
    NotFound,
    OperationCancelled,
    OperationFailed,
    WaitTimeout,
    ConnectionFailed,
    Forbidden,
    Gone,
    RateLimited,
    ServerError,
    TooEarly,
    Unauthorized,
)
from .files import FilesArg
from .models import (
    TERMINAL_STATUSES,
    Diff,
    Event,
    FileEntry,
    GrepResult,
    OutputChunk,
    decode_stream,
    encode_stream,
)

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Image", "Operation", "Result", "Lineage", "branch", "as_completed", "ImageRef", "Command"]

ImageRef = Union[str, "Image", "Result"]
"""An image: an :class:`Image`, a :class:`Result` (its image), a uuid,
``"tag:NAME"`` or a bare tag."""

Command = Union[str, Sequence[str], Mapping[str, Any]]
"""One command of :func:`branch`: a shell string, an argv list, or a dict of
``run()`` keyword arguments."""


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def _ceil_seconds(v: Union[int, float, dt.timedelta]) -> int:
    if isinstance(v, dt.timedelta):
        v = v.total_seconds()
    return max(1, int(math.ceil(v)))


# ---------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------


class Image:
    """An immutable filesystem snapshot.

    Run commands on it (:meth:`run`, :meth:`branch`), read it without a
    sandbox (:meth:`ls`, :meth:`read`, :meth:`grep`, :meth:`download`,
    :meth:`archive`), compare it (:meth:`diff`, :meth:`lineage`) and name it
    (:meth:`set_tag`). Metadata attributes (``tag``, ``created_at``, …) are
    fetched on first access if the handle was made from a bare uuid.
    """

    def __init__(self, client: "Client", uuid: str, data: Optional[Mapping[str, Any]] = None) -> None:
        self._c = client
        self.uuid = uuid
        self._data: Optional[Dict[str, Any]] = dict(data) if data is not None else None

    # -- metadata --------------------------------------------------------

    def refresh(self) -> "Image":
        """Re-read the image's metadata from the server; returns ``self``."""
        self._data = self._c._t.get_json(f"/v1/inspect/{_q(self.uuid)}/") or {}
        return self

    @property
    def raw(self) -> Dict[str, Any]:
        """The server's JSON for this image (fetched if needed)."""
        if self._data is None:
            self.refresh()
        assert self._data is not None
        return self._data

    @property
    def tag(self) -> Optional[str]:
        """The image's tag, or ``None``."""
        return self.raw.get("tag")

    @property
    def created_at(self) -> Optional[str]:
        """Creation time (RFC 3339)."""
        return self.raw.get("created_at")

    @property
    def operation_uuid(self) -> Optional[str]:
        """The operation that produced this image (``None`` for imported images)."""
        return self.raw.get("operation_uuid")

    @property
    def operation(self) -> Optional["Operation"]:
        """The operation that produced this image, or ``None`` (imported images)."""
        u = self.operation_uuid
        if not u:
            return None
        summary = self.raw.get("operation")
        return Operation(self._c, u, data=summary if isinstance(summary, dict) else None)

    @property
    def parent_uuid(self) -> Optional[str]:
        """The image this one was made from (``None`` for base images)."""
        return self.raw.get("parent_uuid")

    @property
    def parent(self) -> Optional["Image"]:
        """The parent image's handle, or ``None``."""
        p = self.parent_uuid
        return Image(self._c, p) if p else None

    @property
    def depth(self) -> int:
        """Number of ancestors."""
        return int(self.raw.get("depth") or 0)

    @property
    def deleted(self) -> bool:
        """Whether the image was deleted (seen in lineage answers: a deleted
        ancestor stays while its descendants need its layers)."""
        return bool(self.raw.get("deleted"))

    @property
    def layer_bytes(self) -> int:
        """Size of this image's own layer in bytes."""
        return int(self.raw.get("layer_bytes") or 0)

    @property
    def checkpoint_bytes(self) -> int:
        """Size of the memory checkpoint kept with this image (made by
        :meth:`Operation.checkpoint`; restore it with :meth:`restore`), 0
        if it has none."""
        return int(self.raw.get("checkpoint_bytes") or 0)

    def __repr__(self) -> str:
        tag = self._data.get("tag") if self._data else None
        return f"Image({self.uuid!r}" + (f", tag={tag!r}" if tag else "") + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    # -- running ---------------------------------------------------------

    def run(
        self,
        command: Optional[Union[str, Sequence[str]]] = None,
        *,
        shell: Union[str, bool, None] = None,
        args: Optional[Sequence[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[Union[int, float, dt.timedelta]] = None,
        disposable: Optional[bool] = None,
        stdin: Optional[Union[str, bytes]] = None,
        files: Optional[FilesArg] = None,
        tag: Optional[str] = None,
        check: bool = False,
        hostname: Optional[str] = None,
        truncate_output_at: Optional[int] = None,
        preserve_env: Optional[bool] = None,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
        runtime: Optional[str] = None,
        network: Optional[bool] = None,
        allow: Optional[Sequence[str]] = None,
        deny: Optional[Sequence[str]] = None,
        memory_bytes: Optional[int] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        max_layer_bytes: Optional[int] = None,
        keep_stdin: bool = False,
    ) -> "Operation":
        """Start a command in a fresh sandbox on this image and return at once.

        The sandbox starts immediately; call :meth:`Operation.wait` for the
        :class:`Result`. Several runs started one after another proceed in
        parallel.

        How the command is given:

        * ``shell="cmd && cmd"`` — a shell expression (``/bin/sh -c``);
        * ``command="cmd && cmd"`` — the same (a string runs in the shell
          unless ``shell=False``);
        * ``command=["prog", "arg"]`` or ``command="prog", args=[...]`` —
          executed directly, no shell.

        Options: ``env`` (extra variables), ``cwd`` (default ``/root``),
        ``timeout`` (seconds or timedelta; server default 60), ``stdin``
        (text or bytes), ``files`` (``{dest: source}`` placed before the
        command runs; a source is a local path — a directory is copied
        recursively —, bytes, a file object, an uploaded file or its uuid,
        or a :class:`~arbor.FileSpec` for mode/owner; a list of local paths
        places each in ``cwd`` under its own name), ``disposable`` (default
        ``True``, ``False`` with ``tag``: keep no snapshot; pass ``False``
        to get ``result.image``), ``tag`` (the name the result image should carry: it is moved there
        only if the command exits 0 and the run changed the image; implies
        ``disposable=False``. arbor moves it in the same transaction that
        records the run, so it moves even if this client is gone by then;
        ``result.tag`` is the tag set, ``result.tag_not_set`` why not, and a
        warning says so. A tag name that is not valid is a ``ValueError``
        before anything runs), ``check`` (``wait()`` raises
        :class:`~arbor.CommandFailed` on a non-zero exit or timeout).

        arbor extensions: ``runtime`` (``"runsc"``, ``"runc"``, ``"crun"``),
        ``network`` (outbound network on/off), ``allow`` / ``deny`` (an
        egress policy; either turns the network on: domain names such as
        ``"pypi.org"`` or ``"*.pythonhosted.org"``, CIDRs, ports such as
        ``"tcp:443"``; ``deny`` wins; what it blocked arrives as
        ``egress_denied`` events, ``live`` ones while it runs), ``memory_bytes``, ``cpus``,
        ``pids``, ``max_layer_bytes`` (filesystem growth cap), ``keep_stdin``
        (leave the command's stdin open after ``stdin``: a long-running
        instance, a REPL or a server, fed with :meth:`Operation.write_stdin`
        and forkable with :meth:`Operation.fork`).
        """
        # This signature is the one list of spawn options: step() and
        # _spawn_body() take theirs from it (_SPAWN_OPTIONS).
        opts = {k: v for k, v in locals().items() if k in _SPAWN_OPTIONS}
        body = self._spawn_body(command, opts)
        resp = self._c._t.request("POST", "/v1/instances", json=body, stream=True)
        return _spawned(self, resp, tag=tag, check=check)

    def step(
        self,
        command: Optional[Union[str, Sequence[str]]] = None,
        *,
        check: bool = False,
        wait_timeout: Optional[float] = None,
        cancel_on_exit: bool = True,
        **options: Any,
    ) -> "Result":
        """Run a command and wait for its :class:`Result`, in one request
        where the server allows it: ``run(...).wait()`` for an agent's step.

        Keywords as for :meth:`run` (not ``keep_stdin``: a step ends).
        arbor answers ``POST /v1/instances?wait=`` once the run has finished
        (an extension; the run's ``Location`` comes at once); a run longer
        than that, or a server that answers at once, is waited for as
        :meth:`Operation.wait` does. ``tag`` is set by arbor as it records
        the run, so a tagged step is one request too. ``wait_timeout``
        bounds the whole step (seconds; :class:`~arbor.WaitTimeout`). With
        ``cancel_on_exit`` (default) a step left by that timeout or by
        Ctrl-C cancels its run (best effort). Raises as
        :meth:`Operation.wait` does.
        """
        opts = _step_options(options)
        body = self._spawn_body(command, opts)
        return _step(self, body, tag=opts["tag"], check=check, wait_timeout=wait_timeout, cancel_on_exit=cancel_on_exit)

    def _spawn_body(self, command: Optional[Union[str, Sequence[str]]], o: Mapping[str, Any]) -> Dict[str, Any]:
        """The ``POST /v1/instances`` body of :meth:`run` and :meth:`step`
        from ``o``, every option of :data:`_SPAWN_OPTIONS`."""
        shell, args, tag, disposable = o["shell"], o["args"], o["tag"], o["disposable"]
        if tag is not None:
            _check_tag(tag)  # before anything is uploaded or started
            if disposable:
                raise ValueError(f"tag={tag!r} names the run's result image: it cannot be disposable=True")
            disposable = False
        if isinstance(shell, str):
            if command is not None:
                raise TypeError("pass either shell='...' or command=..., not both")
            cmd, use_shell = shell, True
        elif command is None:
            raise TypeError("run() needs a command: run(shell='echo hi') or run(['echo', 'hi'])")
        elif isinstance(command, str):
            cmd = command
            use_shell = bool(shell) if shell is not None else not args
        else:
            argv = list(command)
            if not argv:
                raise ValueError("empty command")
            if args:
                argv += list(args)
            cmd, args, use_shell = argv[0], argv[1:], bool(shell)
        allow, deny = o["allow"], o["deny"]
        if isinstance(allow, str) or isinstance(deny, str):
            raise TypeError("allow and deny are lists of entries, e.g. allow=['pypi.org']")
        body: Dict[str, Any] = {
            "command": cmd,
            "image": self.uuid,
            "shell": use_shell,
            "disposable": True if disposable is None else bool(disposable),
        }
        if tag is not None:
            body["result_tag"] = tag  # arbor extension: tagged as the run is recorded
        if args:
            body["args"] = [str(a) for a in args]
        if o["env"]:
            body["env"] = {str(k): str(v) for k, v in o["env"].items()}
        if o["cwd"] is not None:
            body["cwd"] = o["cwd"]
        if o["timeout"] is not None:
            body["timeout"] = _ceil_seconds(o["timeout"])
        stdin, keep_stdin = o["stdin"], o["keep_stdin"]
        if stdin is not None or keep_stdin:
            data = stdin.encode("utf-8") if isinstance(stdin, str) else bytes(stdin or b"")
            body["stdin"] = encode_stream(data)
            if keep_stdin:
                body["stdin"]["close"] = False
        for k in ("hostname", "truncate_output_at", "preserve_env", "uid", "gid"):
            if o[k] is not None:
                body[k] = o[k]
        rt = o["runtime"] or self._c.default_runtime
        if rt:
            body["runtime"] = rt
        if o["network"] is not None:
            body["networking"] = {"enabled": bool(o["network"])}
        if allow or deny:
            body["networking"] = {"enabled": True, "egress": {"allow": list(allow or []), "deny": list(deny or [])}}
        limits = {k: o[k] for k in ("memory_bytes", "cpus", "pids", "max_layer_bytes") if o[k] is not None}
        if limits:
            body["resources_limits"] = limits
        if o["files"]:
            body["files"] = self._c.files.specs(o["files"], o["cwd"])  # uploads: last, once all else is checked
        return body

    def branch(self, commands: Iterable[Command], **run_kwargs: Any) -> List["Result"]:
        """Run several commands from this image in parallel; results in order.
        See :func:`branch`."""
        return branch(self, commands, **run_kwargs)

    # -- inspection ------------------------------------------------------

    def ls(self, path: str = "/") -> List[FileEntry]:
        """List a directory (without starting a sandbox)."""
        d = self._c._t.get_json(f"/v1/inspect/{_q(self.uuid)}/list", {"path": path}) or {}
        directory = d.get("path") or path
        return [FileEntry.from_wire(directory, f) for f in d.get("files") or []]

    def ls_text(self, path: str = "/") -> str:
        """``ls -l`` style listing as text."""
        r = self._c._t.request("GET", f"/v1/inspect/{_q(self.uuid)}/list", params={"path": path, "text": "1"})
        return r.content.decode("utf-8", "replace")

    def read(self, path: str) -> bytes:
        """Return the content of a file in the image."""
        return self._c._t.request("GET", f"/v1/inspect/{_q(self.uuid)}/download", params={"path": path}).content

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Return the content of a file as text."""
        return self.read(path).decode(encoding, errors)

    def exists(self, path: str) -> bool:
        """Whether ``path`` (file or directory) exists in the image."""
        for what in ("download", "archive"):
            try:
                self._c._t.request("HEAD", f"/v1/inspect/{_q(self.uuid)}/{what}", params={"path": path})
                return True
            except (NotFound, BadRequest):
                continue
        return False

    def download(self, path: str, dest: Union[str, "os.PathLike[str]"]) -> Path:
        """Stream a file of the image to a local path; returns it. A ``dest``
        that is a directory, or ends with ``/`` (made if missing), receives
        the file under its own name."""
        out = Path(dest)
        into_dir = os.fspath(dest).endswith(("/", os.sep)) or out.is_dir()
        with self._c._t.request("GET", f"/v1/inspect/{_q(self.uuid)}/download", params={"path": path}, stream=True) as r:
            if into_dir:
                out.mkdir(parents=True, exist_ok=True)  # only once the file exists
                out = out / posixpath.basename(path.rstrip("/"))
            _stream_to(r, out)
        return out

    def archive(
        self,
        path: str = "/",
        dest: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        extract: bool = False,
    ) -> Union[bytes, Path]:
        """Fetch a directory subtree as a tar archive.

        Without ``dest`` the tar bytes are returned. With ``dest`` the tar is
        written there (streamed; a directory ``dest``, or one ending with
        ``/``, receives ``NAME.tar``), or, with ``extract=True``, unpacked
        into the directory ``dest``; the local path is returned.
        """
        target = f"/v1/inspect/{_q(self.uuid)}/archive"
        if dest is None:
            return self._c._t.request("GET", target, params={"path": path}).content
        out = Path(dest)
        if extract:
            out.mkdir(parents=True, exist_ok=True)
            with self._c._t.request("GET", target, params={"path": path}, stream=True) as r:
                with tarfile.open(fileobj=_ReadAdapter(r), mode="r|*") as tf:
                    _safe_extract(tf, out)
            return out
        into_dir = os.fspath(dest).endswith(("/", os.sep)) or out.is_dir()
        with self._c._t.request("GET", target, params={"path": path}, stream=True) as r:
            if into_dir:
                out.mkdir(parents=True, exist_ok=True)
                out = out / ((posixpath.basename(path.rstrip("/")) or "root") + ".tar")
            _stream_to(r, out)
        return out

    def grep(
        self,
        pattern: Union[str, Sequence[str]],
        path: Union[str, Sequence[str], None] = None,
        *,
        glob: Union[str, Sequence[str], None] = None,
        max_count: Optional[int] = None,
        max_total: Optional[int] = None,
        case: Optional[str] = None,
        before: Optional[int] = None,
        after: Optional[int] = None,
    ) -> GrepResult:
        """Search file contents (regular expressions) without a sandbox.

        ``pattern``, ``path`` and ``glob`` may be lists; ``case`` is
        ``"sensitive"``, ``"insensitive"`` or ``"smart"``; ``before``/``after``
        add context lines; ``max_count`` caps matches per file, ``max_total``
        overall.
        """
        params = {
            "pattern": [pattern] if isinstance(pattern, str) else list(pattern),
            "path": path if path is None or isinstance(path, str) else list(path),
            "glob": glob if glob is None or isinstance(glob, str) else list(glob),
            "max_count": max_count,
            "max_total": max_total,
            "case": case,
            "before": before,
            "after": after,
        }
        return GrepResult.from_wire(self._c._t.get_json(f"/v1/inspect/{_q(self.uuid)}/grep", params) or {})

    def diff(self, other: Optional["ImageRef"] = None, path: Optional[str] = None) -> Diff:
        """What changed from this image to ``other`` (arbor extension); without
        ``other``, what this image changed relative to its parent. ``path``
        limits the comparison to a subtree."""
        params: Dict[str, Any] = {"path": path}
        to = self.uuid
        if other is not None:
            to = self._c.images.use(other).uuid
            params["to"] = to
        d = self._c._t.get_json(f"/v1/images/{_q(self.uuid)}/diff", params) or {}
        return Diff.from_wire(d, "" if other is None else self.uuid, to)

    def lineage(self) -> "Lineage":
        """This image's ancestors (parent first) and direct children (arbor extension)."""
        d = self._c._t.get_json(f"/v1/images/{_q(self.uuid)}/lineage") or {}
        return Lineage.from_wire(self._c, self, d)

    # -- naming and lifetime ---------------------------------------------

    def set_tag(self, tag: str) -> "Image":
        """Tag this image; returns ``self``.

        A tag names one image and an image holds one tag: the tag moves from
        any image that had it, and this image's previous tag, if any, is
        removed (tag two names on one image and only the last one stays).
        """
        d = self._c._t.send_json("PATCH", f"/v1/images/{_q(self.uuid)}/tag", {"tag": tag})
        if isinstance(d, dict) and d.get("uuid"):
            self._data = d
        else:
            self._data = None
        return self

    def untag(self) -> "Image":
        """Remove this image's tag. Returns ``self``."""
        d = self._c._t.send_json("DELETE", f"/v1/images/{_q(self.uuid)}/tag")
        self._data = d if isinstance(d, dict) and d.get("uuid") else None
        return self

    def delete(self) -> None:
        """Delete this image (arbor extension). Its descendants stay usable."""
        self._c._t.request("DELETE", f"/v1/images/{_q(self.uuid)}")

    def restore(self, count: int = 1) -> List["Operation"]:
        """Start ``count`` running instances from the memory checkpoint kept
        with this image (an arbor extension; see :meth:`Operation.checkpoint`).
        Each continues the checkpointed instance's main process on a fresh
        copy of this image's files, then diverges. Raises
        :class:`~arbor.Conflict` (409) with the reason when the image has no
        checkpoint or the server's runsc differs from the one that made it."""
        d = self._c._t.request("POST", f"/v1/images/{_q(self.uuid)}/restore", json={"count": count}).json() or {}
        return [Operation(self._c, u, kind="instance") for u in d.get("operations") or []]


# The spawn options, name → default: the keyword-only parameters of
# Image.run (its signature is their one list) but ``check``, which is not
# sent. step() forwards its keywords through them.
_SPAWN_OPTIONS: Dict[str, Any] = {
    p.name: p.default
    for p in inspect.signature(Image.run).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "check"
}


def _step_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """Every spawn option for a step: ``options`` over the defaults;
    ``TypeError`` for what a step does not take."""
    if "keep_stdin" in options:
        raise TypeError("step() takes no keep_stdin: a step waits for its run to end; use run(keep_stdin=True)")
    for k in options:
        if k not in _SPAWN_OPTIONS:
            raise TypeError(f"step() got an unexpected keyword argument {k!r} "
                            "(it takes run()'s keywords, wait_timeout and cancel_on_exit)")
    return {**_SPAWN_OPTIONS, **options}


# The server's tag grammar (imageref.ValidTag): 1-255 characters from
# ASCII letters, digits and . _ : / @ + -, starting with a letter or digit,
# not starting with "tag:" (which marks a tag in an image reference).
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,254}\Z")


def _check_tag(tag: Any) -> None:
    if not isinstance(tag, str) or not _TAG_RE.match(tag) or tag.startswith("tag:"):
        raise ValueError(f"invalid tag {tag!r}: use 1-255 characters from letters, digits and . _ : / @ + -, "
                         "starting with a letter or digit (and not with 'tag:')")


def _location_id(resp: Any) -> str:
    """The last segment of a response's ``Location`` (``/v1/operations/ID``,
    maybe with a query), ``""`` if it has none."""
    loc = resp.header("Location") or ""
    return loc.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _spawned(
    image: Image,
    resp: Any,
    *,
    tag: Optional[str],
    check: bool,
    started: Optional[Callable[["Operation"], None]] = None,
) -> "Operation":
    """The operation a spawn's (streamed) response names, its answer read
    and closed: the JSON's ``uuid``, else the ``Location``. The operation is
    known from the ``Location`` before the body is read (``started`` is told
    it then), so a body that breaks still names the run, which must never
    be spawned again; one that breaks with no ``Location`` says the run may
    have started and how to find it. An answer that is the operation itself
    (arbor's ``?wait=``) is kept, so that ``wait()`` needs no request."""
    op: Optional[Operation] = None

    def known(op_id: str) -> Operation:
        o = Operation(image._c, op_id, kind="instance", tag=tag, check=check, image=image)
        if started is not None:
            started(o)
        return o

    with resp:
        if _location_id(resp):
            op = known(_location_id(resp))
        try:
            raw = resp.read()
            d = json.loads(raw) if raw.strip() else None
        except (*_STREAM_ERRORS, zlib.error, ValueError) as e:
            if op is None:
                raise ConnectionFailed(
                    f"the answer to POST /v1/instances broke before naming the run ({e.__class__.__name__}: {e}); "
                    "it may have started: look for it with client.operations.list(status='EXECUTING')"
                ) from e
            d = None
    if isinstance(d, dict) and d.get("uuid"):
        if op is None or op.id != d["uuid"]:
            op = known(str(d["uuid"]))
        if d.get("status"):
            op._data, op._full = d, True  # the operation, as GET answers it
        else:
            op._spawn = d  # the spawn's own answer
    if op is None:
        raise ArborError("the server accepted the run but named no operation (no uuid, no Location)")
    return op


_PKG_DIR = os.path.dirname(__file__)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` by this function's
    caller point at the first frame outside the arbor package: the user's
    call, however deep inside arbor the warning is issued."""
    level, f = 1, sys._getframe(1)
    while f.f_back is not None and os.path.dirname(f.f_code.co_filename) == _PKG_DIR:
        f, level = f.f_back, level + 1
    return level


def _warn_tag_not_set(r: Optional["Result"]) -> None:
    """Warn (once per result) that the tag a run asked for was not set.
    Called in the user's thread, at the public call, so that the warning
    points there (never from a worker thread)."""
    if r is None or not r.tag_not_set or r._tag_warned or r.status != "SUCCESS":
        return  # a FAILED or CANCELLED run raises instead
    r._tag_warned = True
    warnings.warn(f"tag {r.operation._tag!r} not set: {r.tag_not_set}", UserWarning, stacklevel=_user_stacklevel())


def _stream_to(resp: Any, out: Path) -> None:
    """Write a streamed body to ``out`` through ``out.part``, so ``out``
    appears only whole; the ``.part`` file goes on any failure."""
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "wb") as f:
            chunks = resp.iter_chunks()
            while True:
                try:
                    chunk = next(chunks, None)
                except (*_STREAM_ERRORS, zlib.error) as e:  # reading, not writing, failed
                    raise ConnectionFailed(f"{resp.method} {resp.url} broke off: {e.__class__.__name__}: {e}; "
                                           f"nothing was written to {out}: try again") from e
                if chunk is None:
                    break
                f.write(chunk)
        os.replace(tmp, out)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class _ReadAdapter(io.RawIOBase):
    """File-like view of a streamed response, for tarfile."""

    def __init__(self, resp: Any) -> None:
        self._r = resp

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._r.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def _safe_extract(tf: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")  # type: ignore[call-arg]
        return
    root = dest.resolve()
    for m in tf:
        target = (dest / m.name).resolve()
        if root != target and root not in target.parents:
            raise ArborError(f"refusing to extract {m.name!r} outside {dest}")
        if m.issym() or m.islnk():
            link = (target.parent / m.linkname).resolve() if m.issym() else (dest / m.linkname).resolve()
            if root != link and root not in link.parents:
                continue
        if m.isdev():
            continue
        tf.extract(m, dest, set_attrs=False)


@dataclass
class Lineage:
    """An image's place in its tree: ``ancestors`` (parent first, up to the base
    image) and direct ``children`` (newest first)."""

    image: Image
    ancestors: List[Image]
    children: List[Image]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> Image:
        """The base image of the chain."""
        return self.ancestors[-1] if self.ancestors else self.image

    @classmethod
    def from_wire(cls, client: "Client", image: Image, d: Mapping[str, Any]) -> "Lineage":
        def im(x: Any) -> Image:
            if isinstance(x, str):
                return Image(client, x)
            return Image(client, str(x.get("uuid")), x)

        me = d.get("image")
        if isinstance(me, Mapping) and me.get("uuid"):
            image._data = dict(me)
        return cls(
            image=image,
            ancestors=[im(a) for a in d.get("ancestors") or []],
            children=[im(c) for c in d.get("children") or []],
            raw=dict(d),
        )


# ---------------------------------------------------------------------------
# Operation
# ---------------------------------------------------------------------------

_STREAM_ERRORS = (ConnectionError, socket.timeout, OSError, http.client.HTTPException)

# How long Operation.wait asks arbor to hold its answer: the daemon's bound,
# under common proxies' idle timeouts.
_LONG_POLL = 50.0

# How long one wait of as_completed lasts before it checks whether the
# loop was left: bounds the stray threads (and requests) of an early break.
_AS_COMPLETED_SLICE = 10.0


class _Reconnect(Exception):
    pass


class Fork(NamedTuple):
    """What :meth:`Operation.fork` made: the fork point's filesystem as an
    image, and the copies, each a running instance."""

    image: "Image"
    operations: List["Operation"]
    checkpoint_bytes: int = 0  # the memory each copy holds of its own


class Preview(NamedTuple):
    """An exposed port of a running instance (:meth:`Operation.expose`).
    ``url`` (a signed link that needs no other credential) and ``path``
    are set only by ``expose``; ``expires_at`` is RFC 3339."""

    port: int
    expires_at: str
    url: str = ""
    path: str = ""

    @classmethod
    def _of(cls, d: Dict[str, Any]) -> "Preview":
        return cls(int(d["port"]), d.get("expires_at", ""), d.get("url", ""), d.get("path", ""))


class Operation:
    """A started run or image import.

    ``wait()`` blocks until it ends and returns its :class:`Result`;
    ``events()`` follows its event log live; ``cancel()`` stops it.
    """

    def __init__(
        self,
        client: "Client",
        uuid: str,
        *,
        kind: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
        spawn: Optional[Mapping[str, Any]] = None,
        tag: Optional[str] = None,
        check: bool = False,
        image: Optional[Image] = None,
    ) -> None:
        self._c = client
        self.id = uuid
        self._kind = kind
        self._data: Optional[Dict[str, Any]] = dict(data) if data is not None else None
        self._spawn = dict(spawn) if spawn else {}
        self._tag = tag
        self._check = check
        self._image = image
        self._result: Optional[Result] = None
        self._full = False  # _data is a full OperationResponse (not a list summary)

    @property
    def uuid(self) -> str:
        """The operation id (same as :attr:`id`)."""
        return self.id

    def __repr__(self) -> str:
        st = self._data.get("status") if self._data else None
        return f"Operation({self.id!r}" + (f", status={st!r}" if st else "") + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operation) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- state -----------------------------------------------------------

    def refresh(self) -> Dict[str, Any]:
        """Fetch the operation's current state (``GET /v1/operations/{id}``)."""
        self._data = self._c._t.get_json(f"/v1/operations/{_q(self.id)}") or {}
        self._full = True
        return self._data

    @property
    def raw(self) -> Dict[str, Any]:
        """The last fetched ``OperationResponse`` JSON (fetched if needed)."""
        if self._data is None:
            self.refresh()
        assert self._data is not None
        return self._data

    @property
    def status(self) -> str:
        """Current status (``PENDING`` … ``SUCCESS``/``FAILED``/``CANCELLED``);
        re-read from the server unless already terminal."""
        if self._data is None or self._data.get("status") not in TERMINAL_STATUSES:
            self.refresh()
        return str(self.raw.get("status"))

    @property
    def kind(self) -> str:
        """``"instance"`` (a run) or ``"image_import"``."""
        return self._kind or str(self.raw.get("kind") or "instance")

    def done(self) -> bool:
        """Whether the operation has finished (re-reads its status)."""
        return self.status in TERMINAL_STATUSES

    @property
    def image(self) -> Optional[Image]:
        """The input image of a run."""
        if self._image is None:
            u = self.raw.get("image_uuid") or self._spawn.get("image")
            if u:
                self._image = Image(self._c, u)
        return self._image

    def cancel(self) -> bool:
        """Cancel the operation. Returns ``False`` if it had already finished."""
        try:
            self._c._t.request("DELETE", f"/v1/operations/{_q(self.id)}")
            return True
        except Conflict:
            return False

    def write_stdin(self, data: Union[str, bytes], *, close: bool = False) -> None:
        """Write to the main process's stdin (a run started with
        ``keep_stdin=True``); ``close=True`` closes it afterwards."""
        b = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        body: Dict[str, Any] = dict(encode_stream(b))
        body["close"] = close
        self._c._t.request("POST", f"/v1/operations/{_q(self.id)}/subprocesses/1/stdin", json=body)

    def fork(self, count: int = 1, *, pause_parent: bool = False) -> "Fork":
        """Fork this running instance, memory and all, into ``count`` running
        copies (an arbor extension; runtime ``runsc``, started with
        ``keep_stdin=True``). Each copy continues from this moment, then
        diverges; this instance goes on. Processes started with exec are not
        carried into the copies. ``pause_parent=True`` leaves this instance
        stopped at the fork point until :meth:`resume`. Raises
        :class:`~arbor.Conflict` (409) with the reason when the instance
        cannot be forked."""
        body = {"count": count, "pause_parent": pause_parent}
        d = self._c._t.request("POST", f"/v1/operations/{_q(self.id)}/fork", json=body).json() or {}
        ops = [Operation(self._c, u, kind="instance") for u in d.get("operations") or []]
        return Fork(Image(self._c, d["image"]), ops, int(d.get("checkpoint_bytes") or 0))

    def checkpoint(self) -> "Image":
        """Save this running instance, memory and all, as a new image that
        keeps its memory checkpoint for :meth:`Image.restore`, any number of
        times and after this instance has ended (an arbor extension; runtime
        ``runsc``, started with ``keep_stdin=True``). This instance goes on.
        The checkpoint counts in the account's storage until the image is
        deleted; its size is ``image.checkpoint_bytes``."""
        d = self._c._t.request("POST", f"/v1/operations/{_q(self.id)}/checkpoint").json() or {}
        return Image(self._c, d["image"])

    def resume(self) -> None:
        """Resume an instance a fork left paused (``pause_parent=True``):
        a CONT signal to its main process."""
        self._c._t.request("DELETE", f"/v1/operations/{_q(self.id)}/subprocesses/1", params={"signal": "CONT"})

    def expose(self, port: int, ttl: int = 3600) -> Preview:
        """Expose TCP ``port`` inside this running instance through the
        daemon (an arbor extension): HTTP and WebSocket requests to the
        returned ``url``, a signed link, reach the port for ``ttl`` seconds
        or until :meth:`unexpose` or the instance ends."""
        body = {"port": port, "ttl_seconds": ttl}
        return Preview._of(self._c._t.request("POST", f"/v1/operations/{_q(self.id)}/previews", json=body).json())

    def previews(self) -> List[Preview]:
        """The exposed ports of this instance (without links)."""
        d = self._c._t.request("GET", f"/v1/operations/{_q(self.id)}/previews").json() or {}
        return [Preview._of(p) for p in d.get("previews") or []]

    def unexpose(self, port: int) -> None:
        """Stop exposing ``port``: every link to it stops working."""
        self._c._t.request("DELETE", f"/v1/operations/{_q(self.id)}/previews/{int(port)}")

    # -- events ----------------------------------------------------------

    def events(
        self,
        *,
        follow: bool = True,
        since: Optional[int] = None,
        spid: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[Event]:
        """Iterate over the operation's event log.

        With ``follow=True`` (default) the iterator waits for new events and
        ends after the ``completion`` event; a dropped connection is resumed
        transparently with ``Last-Event-Id`` (no event is repeated or lost).
        ``since`` starts after that event id; ``spid`` keeps one process's
        events (1 = the main process). ``timeout`` (seconds) raises
        :class:`~arbor.WaitTimeout` if the log has not completed by then.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in self._follow(follow=follow, since=since, spid=spid, deadline=deadline):
            if ev is not None:
                yield ev

    def output(self, *, timeout: Optional[float] = None) -> Iterator[OutputChunk]:
        """Iterate over the run's stdout/stderr live, as :class:`~arbor.OutputChunk`."""
        for ev in self.events(timeout=timeout):
            if ev.type in ("stdout", "stderr"):
                yield OutputChunk(ev.type, ev.bytes, ev.spid)

    def _follow(
        self,
        *,
        follow: bool,
        since: Optional[int],
        spid: Optional[int],
        deadline: Optional[float],
    ) -> Iterator[Optional[Event]]:
        t = self._c._t
        last = since
        empty_tries = 0
        errors = 0
        path = f"/v1/operations/{_q(self.id)}/events"

        def check_deadline() -> None:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"operation {self.id} not finished within the timeout", self)

        def backoff(attempt: int, retry_after: Optional[float] = None) -> None:
            delay = t.retry.delay(max(1, min(attempt, 6)), retry_after)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(delay)

        while True:
            check_deadline()
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            params: Dict[str, Any] = {"follow": "1" if follow else None, "spid": spid}
            if last is not None:
                headers["Last-Event-Id"] = str(last)
                params["since"] = last
            read_timeout = t.timeout
            if deadline is not None:
                read_timeout = max(0.05, min(read_timeout, deadline - time.monotonic()))
            try:
                resp = t.request("GET", path, params=params, headers=headers, stream=True,
                                 timeout=read_timeout, retry=False)
            except (TooEarly, RateLimited, Gone, ServerError) as e:
                if not follow and isinstance(e, TooEarly):
                    return  # a replay of an operation with no events yet
                # Not ready yet (e.g. PENDING) or transient: retry as told.
                errors += 1
                if errors > 60:
                    raise
                backoff(errors, e.retry_after)
                continue
            except ConnectionFailed:
                errors += 1
                if errors > 8:
                    raise
                backoff(errors)
                continue
            progressed = False
            clean_end = False
            try:
                for frame in _sse_frames(resp):
                    if frame is None:
                        yield None
                        check_deadline()
                        continue
                    fid, ftype, fdata = frame
                    if ftype == "sse_error":
                        raise _Reconnect(fdata)
                    ev = Event.from_frame(fid, ftype, fdata)
                    if last is not None and 0 <= ev.id <= last:
                        continue  # a server that ignored the resume id
                    if ev.id >= 0:
                        last = ev.id
                    progressed = True
                    errors = 0
                    yield ev
                    if ev.type == "completion":
                        return
                    check_deadline()
                clean_end = True
            except (_Reconnect, zlib.error, *_STREAM_ERRORS):
                errors += 1
                if errors > 20:
                    raise ArborError(f"the event stream of operation {self.id} keeps failing") from None
            finally:
                resp.close()
            if clean_end and not follow:
                return
            # The stream broke, or ended without a completion event:
            # reconnect after the last event seen; if it keeps ending empty,
            # check whether the operation is over.
            if progressed:
                empty_tries = 0
                continue
            empty_tries += 1
            if clean_end and empty_tries >= 3:
                st = self.refresh().get("status")
                if st in TERMINAL_STATUSES and empty_tries >= 5:
                    raise ArborError(f"the event log of operation {self.id} ({st}) ended without a completion event")
            backoff(max(errors, empty_tries))

    # -- waiting ---------------------------------------------------------

    def wait(self, timeout: Optional[float] = None, *, check: Optional[bool] = None) -> "Result":
        """Block until the operation ends and return its :class:`Result`.

        The exit code is in ``result.exit_code`` (a non-zero exit is not an
        exception, unless ``check=True`` or the run was started with
        ``check=True``: then :class:`~arbor.CommandFailed`). Raises
        :class:`~arbor.OperationFailed` if the operation FAILED (an
        infrastructure or setup error), :class:`~arbor.OperationCancelled` if
        it was cancelled, and :class:`~arbor.WaitTimeout` if ``timeout``
        seconds pass first (the operation keeps running). A run started
        with ``tag=`` whose tag was not set warns (``UserWarning``) and
        says why in ``result.tag_not_set``.
        """
        return self._wait(timeout, check, warn=True)

    def _wait(self, timeout: Optional[float], check: Optional[bool], warn: bool) -> "Result":
        """:meth:`wait`; ``warn=False`` leaves the tag warning to a caller
        in the user's thread (a wait in a worker thread)."""
        if self._result is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            if (self._data is None or self._data.get("status") not in TERMINAL_STATUSES) and not self._long_poll(deadline):
                try:
                    for ev in self._follow(follow=True, since=None, spid=0, deadline=deadline):
                        if ev is not None and ev.type == "completion":
                            break
                except (WaitTimeout, Unauthorized, Forbidden):
                    raise
                except NotFound:
                    self.refresh()  # raises NotFound if the operation is unknown
                except ArborError:
                    pass  # events unavailable or broken: poll instead
                self._poll(deadline)
            elif not self._full:
                self.refresh()  # a list summary lacks the output
            self._result = self._make_result()
        r = self._result
        if warn:
            _warn_tag_not_set(r)
        if r.status == "FAILED":
            raise OperationFailed(f"operation {self.id} failed: {r.error or 'no reason given'}", self)
        if r.status == "CANCELLED":
            raise OperationCancelled(f"operation {self.id} was cancelled", self)
        if (self._check if check is None else check) and not r.ok:
            how = "timed out" if r.timed_out else f"exited with {r.exit_code}"
            err = r.stderr.strip().splitlines()[-1:] if r.stderr else []
            raise CommandFailed(f"command {how}" + (f": {err[0]}" if err else ""), r)
        return r

    def _long_poll(self, deadline: Optional[float]) -> bool:
        """One request that arbor answers once the operation has finished
        (``?wait=``, a long poll of up to 50 s); ``True`` if it has. A server
        that does not hold the answer, or a failure, leaves the rest to the
        event stream."""
        wait = _LONG_POLL if deadline is None else min(_LONG_POLL, deadline - time.monotonic())
        if wait <= 0.001:
            return False
        try:
            d = self._c._t.get_json(f"/v1/operations/{_q(self.id)}", params={"wait": f"{wait:.3f}s"}, timeout=wait + 30, retry=False)
        except (Unauthorized, Forbidden, NotFound):
            raise
        except ArborError:
            return False
        if not isinstance(d, dict):
            return False  # not an operation: the event stream decides
        self._data, self._full = d, True
        return d.get("status") in TERMINAL_STATUSES

    def _poll(self, deadline: Optional[float]) -> None:
        delay = 0.05
        while True:
            st = self.refresh().get("status")
            if st in TERMINAL_STATUSES:
                return
            if deadline is not None and time.monotonic() + delay > deadline:
                raise WaitTimeout(f"operation {self.id} not finished within the timeout", self)
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _make_result(self) -> "Result":
        d = self.raw
        r = Result._from_operation(self, d)
        md = d.get("metadata")
        net = md.get("networking") if isinstance(md, Mapping) else None
        if isinstance(net, Mapping) and net.get("egress") and r.status in TERMINAL_STATUSES:
            # The run's totals: its final egress_denied event (spid 0).
            for ev in self.events(follow=False, spid=0):
                if ev.type == "egress_denied" and not ev.data.get("live"):
                    r.egress_denied = ev.data
        if self._tag is not None:
            self._settle_tag(r)
        return r

    def _settle_tag(self, r: "Result") -> None:
        """Record on ``r`` whether the tag this run asked for (``result_tag``)
        was set, and why not. arbor sets it as it records the run, by the
        rule below, and reports it in the operation's ``result.tag``; a
        server without the extension (the rule held, yet no tag) gets it
        set here. A tagging failure is recorded, never raised: the run's
        result stands."""
        want = self._tag
        if r.tag == want:
            return
        src = self.image
        ends = "a tag moves only onto the result of a command that exits 0"
        if r.status != "SUCCESS":
            why = f"the run ended {r.status}; {ends}"
        elif r.timed_out:
            why = f"the command timed out; {ends}"
        elif r.exit_code < 0 and r.signal > 0:
            why = f"the command was killed by signal {r.signal}; {ends}"
        elif r.exit_code != 0:
            why = f"the command exited {r.exit_code}; {ends}"
        elif r.image is None:
            why = "the run saved no image"
        elif src is not None and src.uuid == r.image.uuid:
            why = (f"the run changed nothing, so its result is its input image {src.uuid}, and a tag moves only "
                   f"onto a new image (to name that image anyway: result.set_tag({want!r}))")
        else:
            try:
                r.image.set_tag(want)  # type: ignore[arg-type]
                r.tag = want
                return
            except ArborError as e:
                why = f"the run succeeded but tagging its image {r.image.uuid} failed: {e} (to retry: result.set_tag({want!r}))"
        r.tag_not_set = why

    @property
    def result(self) -> Optional["Result"]:
        """The result if :meth:`wait` already returned, else ``None``."""
        return self._result


def _sse_frames(resp: Any) -> Iterator[Optional[tuple]]:
    """Parse an SSE stream: yields ``(id, event, data)`` per frame and ``None``
    for each comment (keepalive)."""
    fid: Optional[str] = None
    ftype: Optional[str] = None
    data: List[str] = []
    while True:
        line_b = resp.readline()
        if not line_b:
            return
        if line_b.endswith(b"\n"):
            line_b = line_b[:-1]
        if line_b.endswith(b"\r"):
            line_b = line_b[:-1]
        line = line_b.decode("utf-8", "replace")
        if not line:
            if data or ftype is not None:
                yield (fid, ftype, "\n".join(data))
            fid, ftype, data = None, None, []
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            ftype = value
        elif name == "id":
            fid = value


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------


class Result:
    """The outcome of a finished operation.

    For runs: ``exit_code``, ``stdout``/``stderr`` (text) and
    ``stdout_bytes``/``stderr_bytes``, ``timed_out``, ``signal``,
    ``resources`` (usage dict), ``duration`` (seconds), and ``image`` — the
    snapshot the run produced (``None`` for disposable runs). Under an egress
    policy (``allow``/``deny``), ``egress_denied`` is what it blocked
    (``refused_names``, ``refused_queries``, ``dropped_packets``, ``dropped``:
    the run's final ``egress_denied`` event), ``None`` if nothing. ``tag``
    is the tag the run set on its image (``tag=``), ``None`` if none;
    ``tag_not_set`` says why a tag asked for was not set (the command
    failed, the run changed nothing, tagging failed), else ``None``. A result
    delegates ``run``, ``branch``, ``ls``, ``read``, … to its image, so runs
    chain: ``result.run(...)``. For imports ``exit_code`` is 0 and
    ``image`` is the imported image.
    """

    def __init__(
        self,
        *,
        operation: Operation,
        status: str,
        exit_code: int,
        signal: int,
        timed_out: bool,
        stdout_bytes: bytes,
        stderr_bytes: bytes,
        stdout_truncated: bool,
        stderr_truncated: bool,
        resources: Dict[str, Any],
        duration: float,
        image: Optional[Image],
        error: Optional[str],
        raw: Dict[str, Any],
    ) -> None:
        self.operation = operation
        self.operation_id = operation.id
        self.status = status
        self.exit_code = exit_code
        self.signal = signal
        self.timed_out = timed_out
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.resources = resources
        self.duration = duration
        self.image = image
        self.error = error
        self.raw = raw
        self.egress_denied: Optional[Dict[str, Any]] = None
        # The tag the operation set on its image (the operation's result.tag,
        # or the client's own tagging on a server without result_tag), and
        # why a tag asked for with tag= was not set.
        self.tag: Optional[str] = None
        self.tag_not_set: Optional[str] = None
        self._tag_warned = False

    @property
    def stdout(self) -> str:
        """Captured standard output as text (UTF-8; invalid bytes replaced)."""
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """Captured standard error as text."""
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """``exit_code == 0`` and not timed out."""
        return self.exit_code == 0 and not self.timed_out and self.status == "SUCCESS"

    def check(self) -> "Result":
        """Raise :class:`~arbor.CommandFailed` unless :attr:`ok`; returns ``self``."""
        if not self.ok:
            how = "timed out" if self.timed_out else f"exited with {self.exit_code}"
            raise CommandFailed(f"command {how}", self)
        return self

    def __repr__(self) -> str:
        img = self.image.uuid if self.image else None
        return f"Result(exit_code={self.exit_code}, timed_out={self.timed_out}, image={img!r}, operation={self.operation_id!r})"

    @classmethod
    def _from_operation(cls, op: Operation, d: Mapping[str, Any]) -> "Result":
        md = d.get("metadata") or {}
        res = md.get("result") if isinstance(md, Mapping) else None
        res = res or {}
        state = res.get("state") or {}
        kind = d.get("kind") or op._kind or "instance"
        status = str(d.get("status") or "")
        if kind == "instance":
            exit_code = int(state.get("exit_code", -1) if state else -1)
        else:
            exit_code = 0 if status == "SUCCESS" else -1
        out = d.get("result") if isinstance(d.get("result"), Mapping) else {}
        img_uuid = d.get("result_image_uuid") or out.get("image")
        r = cls(
            operation=op,
            status=status,
            exit_code=exit_code,
            signal=int(state.get("signal", -1) if state else -1),
            timed_out=bool(state.get("timed_out", False)),
            stdout_bytes=decode_stream(res.get("stdout")),
            stderr_bytes=decode_stream(res.get("stderr")),
            stdout_truncated=bool((res.get("stdout") or {}).get("truncated")),
            stderr_truncated=bool((res.get("stderr") or {}).get("truncated")),
            resources=dict(res.get("resources") or {}),
            duration=float(d.get("duration") or 0.0),
            image=Image(op._c, img_uuid) if img_uuid else None,
            error=d.get("error"),
            raw=dict(d),
        )
        tag = out.get("tag")
        r.tag = tag if isinstance(tag, str) and tag else None
        return r

    # -- delegation to the image -----------------------------------------

    def _img(self) -> Image:
        if self.image is None:
            raise NoImage(
                f"operation {self.operation_id} kept no snapshot: run it with disposable=False to continue from its result"
            )
        return self.image

    def run(self, command: Optional[Union[str, Sequence[str]]] = None, **kwargs: Any) -> Operation:
        """Run on this result's image (see :meth:`Image.run`)."""
        return self._img().run(command, **kwargs)

    def step(self, command: Optional[Union[str, Sequence[str]]] = None, **kwargs: Any) -> "Result":
        """Run on this result's image and wait (see :meth:`Image.step`), so
        steps chain: ``r = r.step("make", disposable=False)``."""
        return self._img().step(command, **kwargs)

    def branch(self, commands: Iterable[Command], **run_kwargs: Any) -> List["Result"]:
        """Fan out from this result's image (see :func:`branch`)."""
        return branch(self._img(), commands, **run_kwargs)

    def ls(self, path: str = "/") -> List[FileEntry]:
        """List a directory of the result image."""
        return self._img().ls(path)

    def read(self, path: str) -> bytes:
        """Read a file of the result image."""
        return self._img().read(path)

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Read a file of the result image as text."""
        return self._img().read_text(path, encoding, errors)

    def grep(self, pattern: Union[str, Sequence[str]], path: Union[str, Sequence[str], None] = None, **kw: Any) -> GrepResult:
        """Grep the result image."""
        return self._img().grep(pattern, path, **kw)

    def diff(self, other: Optional["ImageRef"] = None, path: Optional[str] = None) -> Diff:
        """Diff against ``other``; by default what this run changed (input → result)."""
        if other is None:
            src = self.operation.image
            if src is None:
                raise NoImage("the run's input image is unknown")
            return src.diff(self._img(), path)
        return self._img().diff(other, path)

    def set_tag(self, tag: str) -> Image:
        """Tag the result image; returns it."""
        return self._img().set_tag(tag)


# ---------------------------------------------------------------------------
# one-request steps
# ---------------------------------------------------------------------------


def _step(
    image: Image,
    body: Dict[str, Any],
    *,
    tag: Optional[str],
    check: bool,
    wait_timeout: Optional[float],
    cancel_on_exit: bool,
    started: Optional[Callable[[Operation], None]] = None,
    warn: bool = True,
) -> Result:
    """Spawn ``body`` asking the server to answer once the run has finished
    (``POST /v1/instances?wait=``) and return its result. ``started`` is
    told the operation as soon as it is known (the async wrapper cancels
    through it); ``warn=False`` leaves the tag warning to the caller."""
    t = image._c._t
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    op: Optional[Operation] = None

    def known(o: Operation) -> None:
        nonlocal op
        op = o
        if started is not None:
            started(o)

    try:
        wait = _LONG_POLL if deadline is None else max(0.0, min(_LONG_POLL, deadline - time.monotonic()))
        try:
            # The body comes only once the run has finished: read it with
            # the wait's own socket timeout, not the client's.
            resp = t.request("POST", "/v1/instances", params={"wait": f"{wait:.3f}s"}, json=body,
                             stream=True, timeout=wait + 30)
        except BadRequest:
            # A server that rejects the wait spawned nothing: ask without it
            # (a body it rejects is rejected again, with its reason).
            resp = t.request("POST", "/v1/instances", json=body, stream=True)
        # Terminal: wait() makes the result from the answer, with no request.
        op = _spawned(image, resp, tag=tag, check=check, started=known)
        return op._wait(None if deadline is None else max(0.0, deadline - time.monotonic()), None, warn)
    except (WaitTimeout, KeyboardInterrupt):
        if cancel_on_exit and op is not None:
            _quiet_cancel(op)
        raise


# ---------------------------------------------------------------------------
# fan-out helpers
# ---------------------------------------------------------------------------


def branch(
    image: Union[Image, Result],
    commands: Iterable[Command],
    *,
    wait_timeout: Optional[float] = None,
    **run_kwargs: Any,
) -> List[Result]:
    """Start every command from ``image`` at once, wait for all, and return the
    results in the order of ``commands``.

    Each command is a shell string, an argv list, or a dict of
    :meth:`Image.run` keyword arguments (merged over ``run_kwargs``). Pass
    ``disposable=False`` to keep each branch's snapshot in
    ``result.image``. ``wait_timeout`` bounds the whole wait (seconds;
    :class:`~arbor.WaitTimeout`). If a wait raises (or is interrupted), the
    operation it waited for and those after it are cancelled and the error
    propagates.
    """
    img = image._img() if isinstance(image, Result) else image
    ops: List[Operation] = []
    try:
        for c in commands:
            kw = dict(run_kwargs)
            if isinstance(c, Mapping):
                kw.update(c)
                ops.append(img.run(**kw))
            elif isinstance(c, str):
                ops.append(img.run(shell=c, **kw))
            else:
                ops.append(img.run(list(c), **kw))
    except BaseException:
        for op in ops:
            _quiet_cancel(op)
        raise
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    results: List[Result] = []
    for i, op in enumerate(ops):
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            results.append(op.wait(left))
        except BaseException:
            for rest in ops[i:]:  # op i too: a Ctrl-C mid-wait leaves it running
                _quiet_cancel(rest)
            raise
    return results


def _quiet_cancel(op: Operation) -> None:
    try:
        op.cancel()
    except Exception:  # noqa: BLE001 - best effort
        pass


def as_completed(ops: Iterable[Operation], timeout: Optional[float] = None) -> Iterator[Result]:
    """Yield results of ``ops`` as they finish (first finished first).

    Errors (:class:`~arbor.OperationFailed`, …) are raised when their
    operation comes up. ``timeout`` bounds the whole iteration
    (:class:`~arbor.WaitTimeout` names the unfinished operations, in its
    ``operations``). Leaving the loop early (``break``) returns at once;
    the operations go on running.
    """
    ops = list(ops)
    if not ops:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    stop = threading.Event()

    def wait(op: Operation) -> Result:
        # In slices, so that a loop left early stops its waiting threads
        # soon (the interpreter joins them at exit). The overall timeout is
        # the loop's to raise, naming every unfinished operation: a slice
        # outlasts it a little.
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = _AS_COMPLETED_SLICE if left is None else min(_AS_COMPLETED_SLICE, max(0.0, left) + 0.5)
            try:
                return op._wait(step, None, warn=False)  # warned as it is yielded, in the caller's thread
            except WaitTimeout:
                if stop.is_set():
                    raise

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(64, len(ops)))
    try:
        futs = {pool.submit(wait, op): op for op in ops}
        try:
            for f in concurrent.futures.as_completed(futs, timeout=timeout):
                try:
                    r = f.result()
                except CommandFailed as e:
                    _warn_tag_not_set(e.result)
                    raise
                _warn_tag_not_set(r)
                yield r
        except concurrent.futures.TimeoutError:
            left = [op for f, op in futs.items() if not f.done()] or ops  # (all done meanwhile)
            names = ", ".join(op.id for op in left[:10]) + (", …" if len(left) > 10 else "")
            raise WaitTimeout(f"{len(left)} of {len(ops)} operations not finished within {timeout}s: {names}",
                              left[0], left) from None
    finally:
        # Not `with`: its exit would wait for every thread, so a `break`
        # (or an error) would hang until all operations had finished.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
