"""HTTP transport on the standard library (``http.client``).

Keeps a small pool of keep-alive connections (safe for use from many threads),
decodes gzip (also incrementally, for streams), maps error statuses to typed
exceptions and retries with backoff where it is safe:

* 425 Too Early and 429 Too Many Requests, for every method: the server
  rejects these before doing anything, so even a POST may be replayed;
* 502/503/504 and connection errors, for idempotent requests (GET, HEAD,
  PUT, DELETE) and for requests that could not have reached the server
  (connection refused);

honouring ``Retry-After`` (delta-seconds or an HTTP date).
"""

from __future__ import annotations

import email.utils
import http.client
import io
import json as jsonlib
import platform
import random
import select
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from ._version import __version__
from .errors import ConnectionFailed, HTTPError, error_for_status

Body = Union[None, bytes, bytearray, memoryview, BinaryIO]
Params = Optional[Mapping[str, Any]]

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
ALWAYS_RETRY = frozenset({425, 429})
IDEMPOTENT_RETRY = frozenset({410, 502, 503, 504})


@dataclass
class RetryPolicy:
    """When and how often to retry.

    ``attempts`` is the total number of tries (1 = no retries); the waits
    follow ``backoff`` (seconds; the last value repeats) with ±20 % jitter,
    unless the server sends ``Retry-After``, which wins up to ``max_wait``.
    """

    attempts: int = 8
    backoff: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    max_wait: float = 30.0

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_wait))
        base = self.backoff[min(attempt - 1, len(self.backoff) - 1)] if self.backoff else 0.0
        return min(base * random.uniform(0.8, 1.2), self.max_wait)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Parse a ``Retry-After`` header (delta-seconds or HTTP-date) into seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def encode_query(params: Params) -> str:
    """Encode query parameters; ``None`` values are dropped, lists repeat the key,
    booleans become ``1``/``0``."""
    if not params:
        return ""
    items: List[Tuple[str, str]] = []
    for k, v in params.items():
        if v is None:
            continue
        values = v if isinstance(v, (list, tuple)) else [v]
        for one in values:
            if isinstance(one, bool):
                one = "1" if one else "0"
            items.append((k, str(one)))
    return urlencode(items, quote_via=quote, safe="/") if items else ""


class _GzipReader(io.RawIOBase):
    """Incrementally decodes a gzip (or zlib) response body."""

    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._eof:
            chunk = self._raw.read1(65536) if hasattr(self._raw, "read1") else self._raw.read(65536)
            if not chunk:
                self._eof = True
                self._buf = self._z.flush()
                break
            self._buf = self._z.decompress(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class Response:
    """A response. Non-streamed responses hold ``content``; streamed ones are read
    with :meth:`read`, :meth:`iter_chunks` or :meth:`iter_lines` and must be closed
    (they are context managers)."""

    def __init__(
        self,
        transport: "Transport",
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        method: str,
        url: str,
        decode: bool = True,
    ) -> None:
        self._transport = transport
        self._conn: Optional[http.client.HTTPConnection] = conn
        self._raw = raw
        self.method = method
        self.url = url
        self.status: int = raw.status
        self.headers: http.client.HTTPMessage = raw.headers
        self.content_encoding = (raw.getheader("Content-Encoding") or "").strip().lower()
        self._reader: Any = raw
        if decode and self.content_encoding in ("gzip", "x-gzip"):
            self._reader = io.BufferedReader(_GzipReader(raw), 65536)
        self.content: bytes = b""

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """Return a response header."""
        return self.headers.get(name, default)

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` decoded bytes (all if ``n < 0``)."""
        if self._conn is None:
            return b""
        if n is None or n < 0:
            data = self._reader.read()
            self._end()
            return data
        if hasattr(self._reader, "read1"):
            data = self._reader.read1(n)
        else:
            data = self._reader.read(n)
        if not data:
            self._end()
        return data

    def _end(self) -> None:
        # http.client's read1() ends quietly when the connection closes
        # before Content-Length: a cut body must not pass for a whole one.
        short = self._raw.length
        self.close()
        if short:
            raise http.client.IncompleteRead(b"", short)

    def iter_chunks(self, size: int = 65536) -> Iterator[bytes]:
        """Yield decoded body chunks until the end of the body."""
        try:
            while True:
                chunk = self.read(size)
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def readline(self) -> bytes:
        """Read one line (including its ``\\n``); ``b""`` at the end."""
        if self._conn is None:
            return b""
        line = self._reader.readline(1 << 23)
        if not line:
            self.close()
        return line

    def json(self) -> Any:
        """Decode the (non-streamed) body as JSON; ``None`` if it is empty."""
        if not self.content.strip():
            return None
        return jsonlib.loads(self.content)

    def _load(self) -> "Response":
        self.content = self.read()
        return self

    def close(self) -> None:
        """Release the connection (back to the pool if the body was read fully)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        complete = self._raw.isclosed() or self._raw.length == 0
        if complete and not self._raw.will_close:
            # read1() can stop exactly at Content-Length without marking the
            # response closed; close it (as http.client does after a full
            # read) so the connection accepts the next request.
            self._raw.close()
            self._transport._release(conn)
        else:
            self._raw.close()
            conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Transport:
    """Thread-safe HTTP transport bound to one base URL and token."""

    def __init__(
        self,
        base_url: str,
        token: Optional[str],
        *,
        timeout: float = 300.0,
        retry: Optional[RetryPolicy] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        user_agent: Optional[str] = None,
        max_idle: int = 32,
    ) -> None:
        parts = urlsplit(base_url if "://" in base_url else "http://" + base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {base_url!r}: use http:// or https://")
        if not parts.hostname:
            raise ValueError(f"no host in URL {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.ssl_context = ssl_context
        self.user_agent = user_agent or f"arbor-python/{__version__} Python/{platform.python_version()}"
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    # -- connections -----------------------------------------------------

    def _new_conn(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    @staticmethod
    def _dropped(conn: http.client.HTTPConnection) -> bool:
        sock = conn.sock
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        # An idle keep-alive socket that is readable was closed by the peer
        # (or has junk): either way it is unusable.
        return bool(readable)

    def _acquire(self, timeout: Optional[float]) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if self._dropped(conn):
                    conn.close()
                    continue
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.timeout = timeout
                return conn, True
        return self._new_conn(timeout), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close all idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def __del__(self) -> None:
        try:
            for c in self._idle:
                c.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- requests --------------------------------------------------------

    def url_for(self, path: str, params: Params = None) -> str:
        """Return the request target (path + query) for an API path."""
        q = encode_query(params)
        return self.prefix + path + ("?" + q if q else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        body: Body = None,
        headers: Optional[Mapping[str, str]] = None,
        stream: bool = False,
        timeout: Optional[float] = None,
        ok_statuses: Tuple[int, ...] = (),
        decode: bool = True,
        retry: Optional[bool] = None,
    ) -> Response:
        """Send a request and return the response.

        ``path`` starts with ``/v1``. Statuses ≥ 400 raise the mapped
        :class:`~arbor.errors.HTTPError` subclass (after retries); 3xx are
        returned as they are (redirects are never followed), as are any
        ``ok_statuses``. With ``stream=True`` the body is left unread.
        ``retry=False`` disables retries; ``None`` applies the policy.
        """
        method = method.upper()
        target = self.url_for(path, params)
        hdrs: Dict[str, str] = {
            "User-Agent": self.user_agent,
            "Accept-Encoding": "gzip" if decode else "identity",
            "Accept": "application/json",
        }
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        payload: Body = body
        if json is not None:
            payload = jsonlib.dumps(json, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        rewind: Optional[int] = None
        replayable = True
        if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                rewind = payload.tell()  # type: ignore[union-attr]
            except (AttributeError, OSError, ValueError):
                replayable = False
        idempotent = method in IDEMPOTENT
        policy = self.retry
        attempts = 1 if retry is False else max(1, policy.attempts)
        tmo = self.timeout if timeout is None else timeout
        last_exc: Optional[BaseException] = None
        for attempt in range(1, attempts + 1):
            if attempt > 1 and rewind is not None:
                payload.seek(rewind)  # type: ignore[union-attr]
            conn, _ = self._acquire(tmo)
            try:
                self._send(conn, method, target, hdrs, payload)
                raw = conn.getresponse()
            except (ConnectionError, socket.timeout, OSError, http.client.HTTPException) as e:
                conn.close()
                last_exc = e
                # A refused connection never reached the server, so any
                # request may be replayed; other failures only if idempotent.
                can = replayable and attempt < attempts and (idempotent or isinstance(e, ConnectionRefusedError))
                if can:
                    time.sleep(policy.delay(attempt, None))
                    continue
                raise ConnectionFailed(
                    f"cannot reach arbor at {self.base_url} ({method} {target}): {e.__class__.__name__}: {e}"
                    + ("" if not isinstance(e, ConnectionRefusedError) else " — is the daemon running? (`sudo arbor serve`)")
                ) from e
            resp = Response(self, conn, raw, method, target, decode=decode)
            status = resp.status
            if status < 400 or status in ok_statuses:
                if method == "HEAD" or not stream:
                    try:
                        resp._load()
                    except (ConnectionError, socket.timeout, OSError, http.client.HTTPException, zlib.error) as e:
                        resp.close()
                        if idempotent and attempt < attempts:
                            last_exc = e
                            time.sleep(policy.delay(attempt, None))
                            continue
                        raise ConnectionFailed(f"reading the response to {method} {target} failed: {e}") from e
                return resp
            # An error status: read the (small) body and decide.
            try:
                resp._load()
            except Exception:  # noqa: BLE001 - the status is what matters
                resp.close()
            retry_after = parse_retry_after(resp.header("Retry-After"))
            retryable = status in ALWAYS_RETRY or (idempotent and status in IDEMPOTENT_RETRY)
            if retryable and replayable and attempt < attempts:
                time.sleep(policy.delay(attempt, retry_after))
                continue
            raise self._error(resp, retry_after)
        raise ConnectionFailed(f"{method} {target}: giving up after {attempts} attempts: {last_exc}")

    @staticmethod
    def _send(conn: http.client.HTTPConnection, method: str, target: str, headers: Dict[str, str], payload: Body) -> None:
        conn.putrequest(method, target, skip_accept_encoding=True)
        length: Optional[int] = None
        if payload is None:
            if method in ("POST", "PUT", "PATCH"):
                length = 0
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            length = len(payload)
        else:
            length = _remaining_length(payload)
        chunked = payload is not None and length is None
        for k, v in headers.items():
            conn.putheader(k, v)
        if length is not None:
            conn.putheader("Content-Length", str(length))
        elif chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if payload is None:
            return
        if isinstance(payload, (bytes, bytearray, memoryview)):
            conn.send(bytes(payload))
            return
        while True:
            block = payload.read(1 << 20)
            if not block:
                break
            if chunked:
                conn.send(b"%x\r\n" % len(block) + block + b"\r\n")
            else:
                conn.send(block)
        if chunked:
            conn.send(b"0\r\n\r\n")

    def _error(self, resp: Response, retry_after: Optional[float]) -> HTTPError:
        body: Any = None
        text = resp.content.decode("utf-8", "replace").strip()
        message = text or (resp._raw.reason or "") or f"HTTP {resp.status}"
        try:
            body = jsonlib.loads(resp.content) if resp.content else None
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            err = body["error"]
            message = err if isinstance(err, str) else jsonlib.dumps(err)
        cls = error_for_status(resp.status)
        rid = resp.header("X-Request-ID") or resp.header("Request-ID")
        return cls(message, status=resp.status, body=body, method=resp.method, url=resp.url,
                   retry_after=retry_after, request_id=rid)

    # -- helpers ---------------------------------------------------------

    def get_json(self, path: str, params: Params = None, **kw: Any) -> Any:
        """GET and decode JSON."""
        return self.request("GET", path, params=params, **kw).json()

    def send_json(self, method: str, path: str, body: Any = None, params: Params = None, **kw: Any) -> Any:
        """Send a JSON body and decode the JSON answer (``None`` if empty)."""
        return self.request(method, path, params=params, json=body, **kw).json()


def _remaining_length(f: Any) -> Optional[int]:
    """Bytes left in a seekable regular file, or ``None`` (then the body is chunked)."""
    try:
        import os

        fileno = f.fileno()
        st = os.fstat(fileno)
        import stat as statmod

        if statmod.S_ISREG(st.st_mode):
            return st.st_size - f.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    try:
        pos = f.tell()
        end = f.seek(0, 2)
        f.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
