"""Plain data returned by the API: directory entries, grep matches, diffs,
events, uploaded files. All are frozen dataclasses keeping the server's JSON
in ``raw`` (so fields the server adds later stay reachable)."""

from __future__ import annotations

import base64
import json
import posixpath
import re
import stat as statmod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "UUID_RE",
    "is_uuid",
    "decode_stream",
    "FileEntry",
    "GrepMatch",
    "GrepResult",
    "Change",
    "Diff",
    "Event",
    "OutputChunk",
    "UploadedFile",
    "FileSpec",
    "TERMINAL_STATUSES",
    "ACTIVE_STATUSES",
]

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
ACTIVE_STATUSES = frozenset({"PENDING", "ASSIGNED", "EXECUTING"})


def is_uuid(s: str) -> bool:
    """Whether ``s`` is a canonical 8-4-4-4-12 UUID."""
    return bool(UUID_RE.match(s))


_UUID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
MIN_UUID_PREFIX = 4


def is_uuid_prefix(s: str) -> bool:
    """Whether ``s`` could start a UUID and has at least 4 characters (the
    grammar of Go's ``imageref.IsUUIDPrefix``; a full UUID is one too)."""
    if not MIN_UUID_PREFIX <= len(s) <= len(_UUID_SHAPE):
        return False
    return all((c == "-") if x == "-" else (c in "0123456789abcdefABCDEF") for c, x in zip(s, _UUID_SHAPE))


def decode_stream(repr_: Optional[Mapping[str, Any]]) -> bytes:
    """Decode a wire ``StreamRepr`` (``{value, encoding}``) into bytes."""
    if not repr_:
        return b""
    value = repr_.get("value") or ""
    enc = (repr_.get("encoding") or "ascii").lower()
    if enc == "base64":
        return base64.b64decode(value)
    return value.encode("utf-8", "surrogateescape")


def encode_stream(data: bytes) -> Dict[str, str]:
    """Encode bytes as a wire ``StreamRepr``: ascii when printable, else base64."""
    if all(32 <= c <= 126 or c in (9, 10, 13) for c in data):
        return {"value": data.decode("ascii"), "encoding": "ascii"}
    return {"value": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing (``image.ls()``)."""

    name: str
    """Entry name within the listed directory."""
    path: str
    """Absolute path in the image."""
    size: int
    mode: int
    """Full ``st_mode`` (file type and permission bits)."""
    uid: int
    gid: int
    owner: Any
    group: Any
    mtime: int
    nlink: int
    is_dir: bool
    is_file: bool
    is_symlink: bool
    symlink_to: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def permissions(self) -> int:
        """Permission and special bits (``mode & 0o7777``)."""
        return self.mode & 0o7777

    @property
    def filemode(self) -> str:
        """``ls -l`` style mode string, e.g. ``-rw-r--r--``."""
        return statmod.filemode(self.mode)

    @classmethod
    def from_wire(cls, directory: str, d: Mapping[str, Any]) -> "FileEntry":
        name = str(d.get("path", ""))
        full = name if name.startswith("/") else posixpath.join(directory or "/", name)
        return cls(
            name=posixpath.basename(name.rstrip("/")) or name,
            path=full,
            size=int(d.get("size") or 0),
            mode=int(d.get("mode") or 0),
            uid=int(d.get("uid") or 0),
            gid=int(d.get("gid") or 0),
            owner=d.get("owner"),
            group=d.get("group"),
            mtime=int(d.get("mtime") or 0),
            nlink=int(d.get("nlink") or 0),
            is_dir=bool(d.get("is_dir")),
            is_file=bool(d.get("is_regular")),
            is_symlink=bool(d.get("is_symlink")),
            symlink_to=str(d.get("symlink_to") or ""),
            raw=dict(d),
        )


@dataclass(frozen=True)
class GrepMatch:
    """One matching (``type == "match"``) or context line of a grep."""

    path: str
    line_number: int
    line_text: str
    type: str
    submatches: List[Dict[str, Any]]
    absolute_offset: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "GrepMatch":
        return cls(
            path=str(d.get("path", "")),
            line_number=int(d.get("line_number") or 0),
            line_text=str(d.get("line_text", "")),
            type=str(d.get("type") or "match"),
            submatches=list(d.get("submatches") or []),
            absolute_offset=int(d.get("absolute_offset") or 0),
            raw=dict(d),
        )


@dataclass(frozen=True)
class GrepResult:
    """Result of ``image.grep()``; iterate it for the matches."""

    path: str
    patterns: List[str]
    matches: List[GrepMatch]
    truncated: bool
    raw: Dict[str, Any] = field(repr=False, compare=False)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.matches)

    def __len__(self) -> int:
        return len(self.matches)

    @property
    def files(self) -> List[str]:
        """Paths of the files with at least one match, in order."""
        seen: Dict[str, None] = {}
        for m in self.matches:
            if m.type == "match":
                seen.setdefault(m.path, None)
        return list(seen)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "GrepResult":
        return cls(
            path=str(d.get("path", "")),
            patterns=list(d.get("patterns") or []),
            matches=[GrepMatch.from_wire(m) for m in d.get("matches") or []],
            truncated=bool(d.get("truncated")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Change:
    """One difference between two images: ``kind`` is ``added``, ``modified``
    or ``deleted``; ``type`` is ``file``, ``dir``, ``symlink`` or ``other``;
    ``diff`` is a unified diff for small modified text files, else ``""``."""

    path: str
    kind: str
    type: str
    old_size: int
    new_size: int
    diff: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "Change":
        return cls(
            path=str(d.get("path", "")),
            kind=str(d.get("kind", "")),
            type=str(d.get("type", "")),
            old_size=int(d.get("old_size") or 0),
            new_size=int(d.get("new_size") or 0),
            diff=str(d.get("diff") or ""),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Diff:
    """Differences from image ``from_uuid`` to image ``to_uuid``; iterate it for
    the :class:`Change` entries."""

    from_uuid: str
    to_uuid: str
    changes: List[Change]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def paths(self, kind: Optional[str] = None) -> List[str]:
        """Changed paths, optionally only those of one ``kind``."""
        return [c.path for c in self.changes if kind is None or c.kind == kind]

    @property
    def added(self) -> List[Change]:
        return [c for c in self.changes if c.kind == "added"]

    @property
    def modified(self) -> List[Change]:
        return [c for c in self.changes if c.kind == "modified"]

    @property
    def deleted(self) -> List[Change]:
        return [c for c in self.changes if c.kind == "deleted"]

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], from_uuid: str = "", to_uuid: str = "") -> "Diff":
        def ref(v: Any, default: str) -> str:
            if isinstance(v, Mapping):
                return str(v.get("uuid") or default)
            return str(v or default)

        return cls(
            from_uuid=ref(d.get("from"), from_uuid),
            to_uuid=ref(d.get("to"), to_uuid),
            changes=[Change.from_wire(c) for c in d.get("changes") or []],
            raw=dict(d),
        )


@dataclass(frozen=True)
class Event:
    """One entry of an operation's event log.

    ``spid`` 0 is the sandbox itself (``init``, ``completion``, …), 1 the main
    process (``spawn``, ``stdout``, ``stderr``, ``exit``). Every log ends with
    a ``completion`` event.
    """

    id: int
    type: str
    spid: int
    ts: str
    data: Dict[str, Any]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def bytes(self) -> bytes:
        """Decoded payload of a ``stdout``/``stderr``/``stdin`` event (else ``b""``)."""
        if self.type in ("stdout", "stderr", "stdin"):
            return decode_stream(self.data)
        return b""

    @property
    def text(self) -> str:
        """Payload of a stream event as text (UTF-8, invalid bytes replaced)."""
        return self.bytes.decode("utf-8", "replace")

    @classmethod
    def from_frame(cls, frame_id: Optional[str], frame_type: Optional[str], data: str) -> "Event":
        try:
            d = json.loads(data) if data else {}
        except ValueError:
            d = {"data": {"value": data}}
        if not isinstance(d, dict):
            d = {"data": d}
        eid = d.get("id")
        if eid is None and frame_id is not None:
            try:
                eid = int(frame_id)
            except ValueError:
                eid = -1
        payload = d.get("data")
        return cls(
            id=int(eid if eid is not None else -1),
            type=str(d.get("type") or frame_type or "message"),
            spid=int(d.get("spid") or 0),
            ts=str(d.get("ts") or ""),
            data=payload if isinstance(payload, dict) else {"value": payload},
            raw=d,
        )


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a run's live output: ``stream`` is ``"stdout"`` or ``"stderr"``."""

    stream: str
    data: bytes
    spid: int = 1

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class UploadedFile:
    """A content-addressed file stored by the server (``client.files.upload()``)."""

    uuid: str
    sha256: str
    size: int
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "UploadedFile":
        return cls(
            uuid=str(d.get("uuid", "")),
            sha256=str(d.get("sha256", "")),
            size=int(d.get("size") or 0),
            created_at=d.get("created_at"),
            raw=dict(d),
        )


@dataclass(frozen=True)
class FileSpec:
    """A file to place into a run, with explicit mode and owner.

    ``source`` is a local path, bytes, an :class:`UploadedFile` or an
    uploaded file's uuid. ``mode`` defaults to the local file's permission
    bits (paths) or ``0o644``.
    """

    source: Any
    mode: Optional[int] = None
    uid: int = 0
    gid: int = 0
