"""Content-addressed file uploads (``client.files``).

Uploads are deduplicated by sha256: the client hashes the content locally,
asks the server whether it already has it (``GET /v1/files/{sha256}``) and
only then uploads (``POST /v1/files``).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import ArborError, NotFound
from .models import FileSpec, UploadedFile, is_uuid

if TYPE_CHECKING:  # pragma: no cover
    from ._http import Transport

__all__ = ["Files", "FileSource", "FilesArg"]

FileSource = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO, UploadedFile, FileSpec, Mapping[str, Any]]
"""What may be placed into a run: a local path (file or directory), bytes, an
open binary file, an :class:`UploadedFile`, an uploaded file's uuid, a
:class:`FileSpec`, or a dict ``{"uuid"|"source", "mode", "uid", "gid"}``."""

FilesArg = Union[Mapping[str, FileSource], Iterable[Union[str, "os.PathLike[str]"]]]

_CHUNK = 1 << 20


def _sha256_of_stream(f: BinaryIO) -> Tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        b = f.read(_CHUNK)
        if not b:
            break
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


class Files:
    """Uploaded files: ``upload``, ``get``, ``exists``, ``list``."""

    def __init__(self, transport: "Transport") -> None:
        self._t = transport
        self._known: Dict[str, UploadedFile] = {}
        self._lock = threading.Lock()

    def upload(self, source: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]) -> UploadedFile:
        """Upload a local file (path), bytes or a binary file object; returns the
        stored file. Content the server already has is not sent again."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            sha = hashlib.sha256(data).hexdigest()
            return self._ensure(sha, lambda: self._post(data, sha))
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a directory: upload files one by one, or pass the directory in run(files=...)")
            with open(path, "rb") as f:
                sha, _ = _sha256_of_stream(f)

            def post_path() -> UploadedFile:
                with open(path, "rb") as f2:
                    return self._post(f2, sha)

            return self._ensure(sha, post_path)
        f = source
        seekable = False
        try:
            seekable = f.seekable()
        except (AttributeError, ValueError):
            pass
        if seekable:
            start = f.tell()
            sha, _ = _sha256_of_stream(f)
            f.seek(start)
            return self._ensure(sha, lambda: self._post(f, sha))
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        try:
            h = hashlib.sha256()
            while True:
                b = f.read(_CHUNK)
                if not b:
                    break
                h.update(b)
                spool.write(b)
            spool.seek(0)
            sha = h.hexdigest()
            return self._ensure(sha, lambda: self._post(spool, sha))  # type: ignore[arg-type]
        finally:
            spool.close()

    def _ensure(self, sha: str, post: Any) -> UploadedFile:
        with self._lock:
            known = self._known.get(sha)
        if known is not None:
            return known
        try:
            uf = self.get(sha)
        except NotFound:
            uf = post()
        with self._lock:
            self._known[sha] = uf
        return uf

    def _post(self, body: Any, sha: str) -> UploadedFile:
        d = self._t.request("POST", "/v1/files", body=body,
                            headers={"Content-Type": "application/octet-stream"}).json()
        uf = UploadedFile.from_wire(d or {})
        if uf.sha256 and uf.sha256 != sha:
            raise ArborError(f"upload corrupted: local sha256 {sha}, server stored {uf.sha256}")
        return uf

    def get(self, sha256: str) -> UploadedFile:
        """Return the stored file with this sha256 (raises :class:`NotFound`)."""
        return UploadedFile.from_wire(self._t.get_json(f"/v1/files/{sha256}") or {})

    def exists(self, sha256: str) -> bool:
        """Whether the server stores a file with this sha256."""
        try:
            self._t.request("HEAD", f"/v1/files/{sha256}")
            return True
        except NotFound:
            return False

    def iter(self, *, since: Any = None, until: Any = None, page_size: int = 1000) -> Iterator[UploadedFile]:
        """Iterate over all uploaded files, newest first."""
        offset = 0
        while True:
            d = self._t.get_json("/v1/files", {"limit": page_size, "offset": offset,
                                                "since": _time_param(since), "until": _time_param(until)}) or {}
            page = d.get("files") or []
            for f in page:
                yield UploadedFile.from_wire(f)
            if len(page) < page_size:
                return
            offset += len(page)

    def list(self, *, since: Any = None, until: Any = None, limit: Optional[int] = None) -> List[UploadedFile]:
        """List uploaded files (all, or the newest ``limit``)."""
        out: List[UploadedFile] = []
        for f in self.iter(since=since, until=until, page_size=min(limit or 1000, 1000)):
            out.append(f)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- run(files=...) --------------------------------------------------

    def specs(self, files: Optional[FilesArg], cwd: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        """Turn a run's ``files`` argument into wire ``FileSpec`` objects,
        uploading (deduplicated) what needs it."""
        if not files:
            return {}
        if isinstance(files, Mapping):
            items = list(files.items())
        else:
            base = cwd or "/root"
            items = []
            for p in files:
                if not isinstance(p, (str, os.PathLike)):
                    raise TypeError(f"files list entries must be local paths, not {type(p).__name__}: use a dict {{dest: source}}")
                items.append((posixpath.join(base, Path(p).name), p))
        out: Dict[str, Dict[str, Any]] = {}
        for dest, src in items:
            if not isinstance(dest, str) or not dest:
                raise TypeError(f"file destination must be a non-empty path string, got {dest!r}")
            if not dest.startswith("/"):
                dest = posixpath.join(cwd or "/root", dest)
            self._spec(dest, src, out)
        return out

    def _spec(self, dest: str, src: Any, out: Dict[str, Dict[str, Any]],
              mode: Optional[int] = None, uid: int = 0, gid: int = 0) -> None:
        if isinstance(src, FileSpec):
            self._spec(dest, src.source, out, src.mode, src.uid, src.gid)
            return
        if isinstance(src, Mapping):
            m = src.get("mode", mode)
            if isinstance(m, str):
                m = int(m.replace("0o", ""), 8)
            u, g = int(src.get("uid", uid)), int(src.get("gid", gid))
            if src.get("uuid"):
                out[dest] = _wire(str(src["uuid"]), m if m is not None else 0o644, u, g)
                return
            if src.get("source") is None:
                raise ValueError(f"file spec for {dest} needs 'uuid' or 'source'")
            self._spec(dest, src["source"], out, m, u, g)
            return
        if isinstance(src, UploadedFile):
            out[dest] = _wire(src.uuid, mode if mode is not None else 0o644, uid, gid)
            return
        if isinstance(src, str) and is_uuid(src) and not os.path.exists(src):
            out[dest] = _wire(src, mode if mode is not None else 0o644, uid, gid)
            return
        if isinstance(src, (str, os.PathLike)):
            path = Path(src)
            if path.is_dir():
                for root, dirs, names in os.walk(path):
                    dirs.sort()
                    for name in sorted(names):
                        lp = Path(root) / name
                        rel = lp.relative_to(path).as_posix()
                        self._spec(posixpath.join(dest, rel), lp, out, mode, uid, gid)
                return
            if not path.exists():
                raise FileNotFoundError(f"run(files=...): local file {path} does not exist")
            m = mode if mode is not None else (path.stat().st_mode & 0o7777)
            out[dest] = _wire(self.upload(path).uuid, m, uid, gid)
            return
        if isinstance(src, (bytes, bytearray, memoryview)) or hasattr(src, "read"):
            out[dest] = _wire(self.upload(src).uuid, mode if mode is not None else 0o644, uid, gid)
            return
        raise TypeError(f"cannot place {type(src).__name__} at {dest}: use a path, bytes, a file object, or an uploaded file")


def _wire(uuid: str, mode: int, uid: int, gid: int) -> Dict[str, Any]:
    return {"uuid": uuid, "mode": "%04o" % (mode & 0o7777), "uid": uid, "gid": gid}


def _time_param(v: Any) -> Optional[str]:
    """``since``/``until``: a datetime, a timedelta (ago), seconds, or a string like ``"15m"``."""
    import datetime as dt

    if v is None:
        return None
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.astimezone()
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return f"{int(v.total_seconds())}s"
    if isinstance(v, (int, float)):
        return f"{int(v)}s"
    return str(v)
