"""The synchronous client: :class:`Client` with its ``images``, ``files`` and
``operations`` managers."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ._http import RetryPolicy, Transport
from .errors import ArborError, BadRequest, ConfigError, NotFound
from .files import Files, _time_param
from .models import is_uuid, is_uuid_prefix
from .objects import Command, Image, ImageRef, Operation, Result, _location_id, branch

__all__ = ["Client", "Images", "Operations", "discover", "DEFAULT_HOME"]

DEFAULT_HOME = "/var/lib/arbor"


def discover(
    url: Optional[str] = None,
    token: Optional[str] = None,
    home: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> Tuple[str, str]:
    """Find the daemon's URL and token.

    Explicit arguments win; then ``ARBOR_URL`` / ``ARBOR_TOKEN``; then the
    files ``<home>/url`` and ``<home>/token`` that ``arbor serve`` writes,
    with ``home`` from the argument, ``ARBOR_HOME`` or ``/var/lib/arbor``.
    """
    h = Path(home or os.environ.get("ARBOR_HOME") or DEFAULT_HOME)
    if not url:
        url = os.environ.get("ARBOR_URL") or _read(h / "url", "URL")
    if token is None:
        token = os.environ.get("ARBOR_TOKEN") or _read(h / "token", "token")
    if not url:
        raise ConfigError(
            f"cannot find the arbor daemon: no ARBOR_URL and no {h / 'url'}. "
            "Start it with `sudo arbor serve`, or pass Client(url=..., token=...)"
        )
    if not token:
        raise ConfigError(
            f"no arbor token: set ARBOR_TOKEN, pass Client(token=...), or make {h / 'token'} readable "
            "(it is written by `arbor serve`, mode 0600: run as root or copy the token)"
        )
    return url.strip(), token.strip()


def _read(p: Path, what: str) -> Optional[str]:
    try:
        return p.read_text().strip() or None
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise ConfigError(
            f"cannot read the arbor {what} file {p}: permission denied. "
            f"Run as root, or set ARBOR_{what.upper()} (or pass it to Client())"
        ) from e
    except OSError:
        return None


class Client:
    """A connection to an arbor daemon (or any ConTree-compatible server).

    ``Client()`` finds the local daemon by itself (see :func:`discover`);
    ``Client(url=..., token=...)`` names one. It is safe to share between
    threads. ``timeout`` bounds each HTTP request (seconds); ``retry``
    tunes retries (:class:`~arbor.RetryPolicy`); ``runtime`` sets a
    default sandbox runtime for runs (``"runsc"``, ``"runc"``, ``"crun"``).

    Managers: :attr:`images` (:class:`Images`), :attr:`files`
    (:class:`~arbor.files.Files`), :attr:`operations` (:class:`Operations`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        home: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: float = 300.0,
        retry: Optional[RetryPolicy] = None,
        runtime: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        user_agent: Optional[str] = None,
    ) -> None:
        url, token = discover(url, token, home)
        self.url = url
        self.default_runtime = runtime
        self._t = Transport(url, token, timeout=timeout, retry=retry, ssl_context=ssl_context, user_agent=user_agent)
        self.images = Images(self)
        self.files = Files(self._t)
        self.operations = Operations(self)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Close idle connections (the client stays usable)."""
        self._t.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def whoami(self) -> Dict[str, Any]:
        """The token's identity, permissions and limits (``GET /v1/whoami``)."""
        return self._t.get_json("/v1/whoami") or {}

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document (arbor extension)."""
        return self._t.get_json("/v1/openapi.json") or {}

    def image(self, ref: ImageRef) -> Image:
        """Shorthand for ``client.images.use(ref)``."""
        return self.images.use(ref)

    def run(self, image: ImageRef, command: Any = None, **kwargs: Any) -> Operation:
        """Start a run on ``image`` (a handle, uuid or tag); see :meth:`Image.run`."""
        return self.images.use(image).run(command, **kwargs)

    def step(self, image: ImageRef, command: Any = None, **kwargs: Any) -> Result:
        """Run on ``image`` and wait, in one request where the server allows
        it; see :meth:`Image.step`."""
        return self.images.use(image).step(command, **kwargs)

    def branch(self, image: ImageRef, commands: Iterable[Command], **run_kwargs: Any) -> List[Result]:
        """Fan out from ``image``; see :func:`arbor.branch`."""
        return branch(self.images.use(image), commands, **run_kwargs)


class Images:
    """Images: ``use``, ``get``, ``list``, ``import_image``, ``import_tar``,
    ``tag``, ``untag``, ``delete``."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def use(self, ref: ImageRef) -> Image:
        """A handle for an image: a uuid (no request), ``"tag:NAME"``, a bare
        tag or a unique uuid prefix of at least 4 characters (``"3f2a"``:
        tried as a tag first, as the CLI does), resolved now, so a later
        move of the tag does not affect the handle; or an existing handle
        or result. :class:`~arbor.NotFound` if nothing matches; a prefix
        that matches several images is an :class:`~arbor.ArborError`
        listing them."""
        if isinstance(ref, Image):
            return ref
        if isinstance(ref, Result):
            return ref._img()
        if not isinstance(ref, str) or not ref.strip():
            raise TypeError(f"image reference must be a uuid, a uuid prefix or a tag, not {ref!r}")
        ref = ref.strip()
        if is_uuid(ref):
            return Image(self._c, ref.lower())
        if ref.startswith("tag:"):
            return Image(self._c, self._find_by_tag(ref[4:]))
        try:
            return Image(self._c, self._find_by_tag(ref))
        except (NotFound, BadRequest):
            if not is_uuid_prefix(ref):
                raise
        im = self._find_by_prefix(ref.lower())
        if im is None:
            raise NotFound(f"no image has tag {ref!r} or a uuid starting with it (list them with client.images.list())",
                           status=404)
        return im

    # The pages _find_by_prefix reads from a server that does not filter by
    # uuid prefix: at most _SCAN_PAGES more of _SCAN_PAGE images (the API's
    # largest page) after the first.
    _SCAN_PAGE, _SCAN_PAGES = 1000, 20

    def _find_by_prefix(self, prefix: str) -> Optional[Image]:
        """The one image whose uuid starts with ``prefix`` (``GET
        /v1/images?uuid_prefix=``, an arbor extension: one request),
        ``None`` if none. A server that ignores the filter (ConTree's) lists
        every image: an image in that first page that does not match gives
        it away, and the rest of the list is searched page by page, until a
        second match or the end, for at most ``_SCAN_PAGES`` pages."""
        limit = 100
        page = self._prefix_page({"uuid_prefix": prefix, "limit": limit})
        hits = [im for im in page if str(im.get("uuid", "")).lower().startswith(prefix)]
        if len(hits) == len(page) or len(page) < limit:
            # Filtered (every image matches), or unfiltered but all there is.
            return self._one_prefix_match(prefix, hits, more=len(page) >= limit)
        offset = len(page)
        pages = 0
        while len(hits) < 2:
            if pages == self._SCAN_PAGES:
                found = f" ({hits[0]['uuid']} matches, but an older image may too)" if hits else ""
                raise ArborError(
                    f"image prefix {prefix!r}: the server does not filter images by uuid prefix and has more "
                    f"images than the {offset} searched{found}: pass the full uuid or a tag")
            page = self._prefix_page({"limit": self._SCAN_PAGE, "offset": offset})
            pages += 1
            hits += [im for im in page if str(im.get("uuid", "")).lower().startswith(prefix)]
            offset += len(page)
            if len(page) < self._SCAN_PAGE:
                return self._one_prefix_match(prefix, hits, more=False)
        return self._one_prefix_match(prefix, hits, more=True)

    def _prefix_page(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        d = self._c._t.get_json("/v1/images", params) or {}
        return list((d.get("images") or []) if isinstance(d, dict) else d)

    def _one_prefix_match(self, prefix: str, hits: List[Dict[str, Any]], *, more: bool) -> Optional[Image]:
        """The image in ``hits`` if there is one, ``None`` if none, and an
        error naming candidates if several; ``more``: others may match too."""
        show = 5
        if not hits:
            return None
        if len(hits) == 1:
            return Image(self._c, str(hits[0]["uuid"]), hits[0])
        n = f"at least {len(hits)}" if more else str(len(hits))
        ids = ", ".join(str(im["uuid"]) for im in hits[:show]) + (", ..." if len(hits) > show else "")
        raise ArborError(f"image prefix {prefix!r} is ambiguous: it matches {n} images ({ids}): type more characters")

    def _find_by_tag(self, tag: str) -> str:
        resp = self._c._t.request("GET", "/v1/inspect/", params={"tag": tag})
        if 300 <= resp.status < 400:
            loc = resp.header("Location") or ""
            parts = [p for p in loc.split("?")[0].split("/") if p]
            if parts and is_uuid(parts[-1]):
                return parts[-1].lower()
            raise ArborError(f"unexpected redirect for tag {tag!r}: Location {loc!r}")
        d = resp.json() or {}
        if isinstance(d, dict) and d.get("uuid"):
            return str(d["uuid"])
        raise NotFound(f"no image tagged {tag!r}", status=404)

    def get(self, ref: ImageRef) -> Image:
        """Fetch an image's metadata by uuid or tag (:class:`~arbor.NotFound` if unknown)."""
        return self.use(ref).refresh()

    def iter(
        self,
        *,
        tag: Optional[str] = None,
        tagged: Optional[bool] = None,
        since: Any = None,
        until: Any = None,
        page_size: int = 1000,
    ) -> Iterator[Image]:
        """Iterate over images, newest first. ``tag`` filters by tag prefix,
        ``tagged=True`` keeps tagged images; ``since``/``until`` take a
        datetime, a timedelta (ago), seconds or a string like ``"15m"``."""
        offset = 0
        while True:
            params = {
                "limit": page_size,
                "offset": offset,
                "tag": tag,
                "tagged": "1" if tagged else None,
                "since": _time_param(since),
                "until": _time_param(until),
            }
            d = self._c._t.get_json("/v1/images", params) or {}
            page = (d.get("images") or []) if isinstance(d, dict) else d
            for im in page:
                yield Image(self._c, im["uuid"], im)
            if len(page) < page_size:
                return
            offset += len(page)

    def list(
        self,
        *,
        tag: Optional[str] = None,
        tagged: Optional[bool] = None,
        since: Any = None,
        until: Any = None,
        limit: Optional[int] = None,
    ) -> List[Image]:
        """List images (all, or the newest ``limit``); filters as in :meth:`iter`."""
        out: List[Image] = []
        for im in self.iter(tag=tag, tagged=tagged, since=since, until=until, page_size=min(limit or 1000, 1000)):
            out.append(im)
            if limit is not None and len(out) >= limit:
                break
        return out

    def import_image(
        self,
        url: str,
        *,
        tag: Optional[str] = None,
        wait: bool = True,
        timeout: Optional[float] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
    ) -> Union[Image, Operation]:
        """Import an image from a registry (``docker://…``) or an uploaded rootfs
        tar (``upload://<file uuid>``).

        With ``wait=True`` (default) returns the imported :class:`Image`;
        otherwise the import :class:`Operation`. ``timeout`` is the server-side
        import timeout in seconds (and bounds the wait).
        """
        body: Dict[str, Any] = {"registry": {"url": url}}
        if username is not None or password is not None:
            body["registry"]["credentials"] = {"username": username or "", "password": password or ""}
        if tag is not None:
            body["tag"] = tag
        if timeout is not None:
            body["timeout"] = int(timeout)
        resp = self._c._t.request("POST", "/v1/images/import", json=body)
        d = resp.json() or {}
        op_id = (d.get("uuid") if isinstance(d, dict) else None) or _location_id(resp)
        if not op_id:
            raise ArborError("the server accepted the import but named no operation")
        op = Operation(self._c, op_id, kind="image_import")
        if not wait:
            return op
        res = op.wait(None if timeout is None else timeout + 30)
        if res.image is None:
            raise ArborError(f"import {op_id} finished without an image")
        return res.image

    def import_tar(
        self,
        source: Union[str, "os.PathLike[str]", bytes, BinaryIO],
        *,
        tag: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Image:
        """Upload a root filesystem tar (optionally gzipped) and import it as a
        base image: no registry needed. See also :func:`arbor.testing.busybox_tar`."""
        uf = self._c.files.upload(source)
        im = self.import_image(f"upload://{uf.uuid}", tag=tag, timeout=timeout)
        assert isinstance(im, Image)
        return im

    def tag(self, image: ImageRef, tag: str) -> Image:
        """Tag an image (the tag moves from any image that had it)."""
        return self.use(image).set_tag(tag)

    def untag(self, image: ImageRef) -> Image:
        """Remove an image's tag (``image`` may be the tag itself)."""
        return self.use(image).untag()

    def delete(self, image: ImageRef) -> None:
        """Delete an image (arbor extension)."""
        self.use(image).delete()


class Operations:
    """Operations: ``get``, ``list``, ``iter``, ``cancel``, ``events``, ``wait``."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def get(self, op: Union[str, Operation]) -> Operation:
        """Fetch an operation by id (:class:`~arbor.NotFound` if unknown)."""
        oid = op.id if isinstance(op, Operation) else op
        o = Operation(self._c, oid)
        o.refresh()
        return o

    def iter(
        self,
        *,
        status: Optional[str] = None,
        kind: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        page_size: int = 1000,
    ) -> Iterator[Operation]:
        """Iterate over operations, newest first, optionally filtered by
        ``status`` (e.g. ``"EXECUTING"``), ``kind`` (``"instance"`` or
        ``"image_import"``) and time."""
        offset = 0
        while True:
            params = {"limit": page_size, "offset": offset, "status": status, "kind": kind,
                      "since": _time_param(since), "until": _time_param(until)}
            d = self._c._t.get_json("/v1/operations", params)
            page = d if isinstance(d, list) else (d or {}).get("operations") or []
            for o in page:
                yield Operation(self._c, o["uuid"], kind=o.get("kind"), data=o)
            if len(page) < page_size:
                return
            offset += len(page)

    def list(
        self,
        *,
        status: Optional[str] = None,
        kind: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        limit: Optional[int] = 100,
    ) -> List[Operation]:
        """List operations (newest ``limit``, default 100; ``None`` for all).
        Each handle holds the summary row; ``refresh()`` fetches details."""
        out: List[Operation] = []
        for o in self.iter(status=status, kind=kind, since=since, until=until,
                           page_size=min(limit or 1000, 1000)):
            out.append(o)
            if limit is not None and len(out) >= limit:
                break
        return out

    def cancel(self, op: Union[str, Operation]) -> bool:
        """Cancel an operation; ``False`` if it had already finished."""
        oid = op.id if isinstance(op, Operation) else op
        return Operation(self._c, oid).cancel()

    def events(self, op: Union[str, Operation], **kwargs: Any) -> Iterator[Any]:
        """Iterate an operation's events; see :meth:`Operation.events`."""
        o = op if isinstance(op, Operation) else Operation(self._c, op)
        return o.events(**kwargs)

    def wait(self, op: Union[str, Operation], timeout: Optional[float] = None) -> Result:
        """Wait for an operation by id; see :meth:`Operation.wait`."""
        o = op if isinstance(op, Operation) else Operation(self._c, op)
        return o.wait(timeout)
