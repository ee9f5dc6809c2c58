"""asyncio variant: a thin layer over the synchronous client.

Every call runs the synchronous implementation in a worker thread (a
dedicated pool, so many concurrent ``wait()`` calls do not starve the
event loop's default executor). Same names, awaitable::

    import asyncio
    from arbor.aio import AsyncClient

    async def main() -> None:
        async with AsyncClient() as c:
            base = await c.images.use("busybox")
            env = await (await base.run(shell="echo hi > /f", disposable=False)).wait()
            ops = [await env.run(shell=f"test -f /f && echo {i}") for i in range(3)]
            results = await asyncio.gather(*(op.wait() for op in ops))
            print([r.stdout for r in results])

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Optional, TypeVar, Union

from .client import Client
from .models import Diff, Event, FileEntry, GrepResult, OutputChunk, UploadedFile
from .errors import CommandFailed
from .objects import Command, Image, Lineage, Operation, Result, _quiet_cancel, _step, _step_options, _warn_tag_not_set

__all__ = ["AsyncClient", "AsyncImage", "AsyncOperation", "AsyncResult", "AsyncImages", "AsyncFiles", "AsyncOperations"]

T = TypeVar("T")


class _Runner:
    def __init__(self, max_workers: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="arbor-aio")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def iterate(self, it: Iterator[T]) -> AsyncIterator[T]:
        sentinel = object()
        while True:
            item = await self(next, it, sentinel)
            if item is sentinel:
                return
            yield item  # type: ignore[misc]


def _unwrap(ref: Any) -> Any:
    if isinstance(ref, (AsyncImage, AsyncResult)):
        return ref.sync
    return ref


class AsyncImage:
    """Async handle of an :class:`~arbor.Image`; ``sync`` is the sync handle."""

    def __init__(self, image: Image, run: _Runner) -> None:
        self.sync = image
        self._run = run

    @property
    def uuid(self) -> str:
        return self.sync.uuid

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncImage) and other.sync == self.sync

    def __hash__(self) -> int:
        return hash(self.sync)

    async def refresh(self) -> "AsyncImage":
        await self._run(self.sync.refresh)
        return self

    async def info(self) -> Dict[str, Any]:
        """The image's metadata (tag, created_at, parent_uuid, …)."""
        return await self._run(lambda: self.sync.raw)

    async def run(self, command: Any = None, **kwargs: Any) -> "AsyncOperation":
        """Start a run; see :meth:`arbor.Image.run`. Returns once started."""
        return AsyncOperation(await self._run(self.sync.run, command, **kwargs), self._run)

    async def step(
        self,
        command: Any = None,
        *,
        check: bool = False,
        wait_timeout: Optional[float] = None,
        cancel_on_exit: bool = True,
        **options: Any,
    ) -> "AsyncResult":
        """Run and wait, in one request where the server allows it; see
        :meth:`arbor.Image.step`. With ``cancel_on_exit``, cancelling the
        awaiting task cancels the run too (best effort)."""
        opts = _step_options(options)  # its TypeErrors at once, as the sync step's
        started = _Started()

        def step() -> Result:
            body = self.sync._spawn_body(command, opts)
            return _step(self.sync, body, tag=opts["tag"], check=check, wait_timeout=wait_timeout,
                         cancel_on_exit=cancel_on_exit, started=started.set, warn=False)

        try:
            r = await self._run(step)
        except asyncio.CancelledError:
            if cancel_on_exit:
                started.cancel()
            raise
        except CommandFailed as e:
            _warn_tag_not_set(e.result)
            raise
        _warn_tag_not_set(r)  # here, not in the worker thread: it points at the caller's await
        return AsyncResult(r, self._run)

    async def branch(self, commands: Iterable[Command], **run_kwargs: Any) -> List["AsyncResult"]:
        """Start all commands at once and gather their results in order."""
        ops = [await self.run(**_as_kwargs(c, run_kwargs)) for c in commands]
        try:
            results = await asyncio.gather(*(self._run(op.sync._wait, None, None, False) for op in ops))
        except BaseException as e:
            if isinstance(e, CommandFailed):
                _warn_tag_not_set(e.result)
            # From a thread of their own: this client's pool may be busy
            # with the very waits being given up.
            cancelled = _cancel_soon([op.sync for op in ops])
            if isinstance(e, Exception):
                await asyncio.wrap_future(cancelled)
            raise
        for r in results:
            _warn_tag_not_set(r)
        return [AsyncResult(r, self._run) for r in results]

    async def ls(self, path: str = "/") -> List[FileEntry]:
        return await self._run(self.sync.ls, path)

    async def read(self, path: str) -> bytes:
        return await self._run(self.sync.read, path)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return await self._run(self.sync.read_text, path, encoding)

    async def exists(self, path: str) -> bool:
        return await self._run(self.sync.exists, path)

    async def download(self, path: str, dest: Any) -> Any:
        return await self._run(self.sync.download, path, dest)

    async def archive(self, path: str = "/", dest: Any = None, **kw: Any) -> Any:
        return await self._run(self.sync.archive, path, dest, **kw)

    async def grep(self, pattern: Any, path: Any = None, **kw: Any) -> GrepResult:
        return await self._run(self.sync.grep, pattern, path, **kw)

    async def diff(self, other: Any, path: Optional[str] = None) -> Diff:
        return await self._run(self.sync.diff, _unwrap(other), path)

    async def lineage(self) -> Lineage:
        return await self._run(self.sync.lineage)

    async def set_tag(self, tag: str) -> "AsyncImage":
        await self._run(self.sync.set_tag, tag)
        return self

    async def untag(self) -> "AsyncImage":
        await self._run(self.sync.untag)
        return self

    async def delete(self) -> None:
        await self._run(self.sync.delete)

    async def restore(self, count: int = 1) -> List["AsyncOperation"]:
        """Start instances from the kept checkpoint; see :meth:`arbor.Image.restore`."""
        return [AsyncOperation(op, self._run) for op in await self._run(self.sync.restore, count)]


class _Started:
    """The operation of a step, once known, so that a cancelled task can
    cancel it from the loop while its thread still waits; a step cancelled
    before its operation was known cancels it as soon as it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._op: Optional[Operation] = None
        self._cancelled = False

    def set(self, op: Operation) -> None:
        with self._lock:
            self._op = op
            late = self._cancelled
        if late:
            _quiet_cancel(op)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            op = self._op
        if op is not None:
            _cancel_soon([op])  # not awaited: the task is being cancelled


def _cancel_soon(ops: List[Operation]) -> "concurrent.futures.Future[None]":
    """Cancel ``ops`` (best effort) from a short-lived daemon thread of its
    own, not the client's pool: that may be saturated by the very runs to
    stop, or shut down. The future is done once all were asked. Never
    raises: an interpreter that is shutting down starts no thread."""
    done: "concurrent.futures.Future[None]" = concurrent.futures.Future()

    def cancel_all() -> None:
        try:
            for op in ops:
                _quiet_cancel(op)
        finally:
            done.set_result(None)

    try:
        threading.Thread(target=cancel_all, name="arbor-cancel", daemon=True).start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        done.set_result(None)
    return done


def _as_kwargs(c: Any, base: Dict[str, Any]) -> Dict[str, Any]:
    kw = dict(base)
    if isinstance(c, dict):
        kw.update(c)
    elif isinstance(c, str):
        kw["shell"] = c
    else:
        kw["command"] = list(c)
    return kw


class AsyncResult:
    """Async view of a :class:`~arbor.Result`: the same data attributes
    (``exit_code``, ``stdout``, ``ok``, …); ``image`` is an
    :class:`AsyncImage` and ``operation`` an :class:`AsyncOperation`;
    ``run``/``step``/``branch``/``ls``/``read``/``grep``/``diff``/``set_tag``/
    ``check`` are awaitable."""

    # Read from the sync result as they are: none of them makes a request.
    _DATA = frozenset({
        "operation_id", "status", "exit_code", "signal", "timed_out", "stdout_bytes", "stderr_bytes",
        "stdout_truncated", "stderr_truncated", "resources", "duration", "error", "raw", "egress_denied",
        "tag", "tag_not_set", "stdout", "stderr", "ok",
    })

    def __init__(self, result: Result, run: _Runner) -> None:
        self.sync = result
        self._run = run
        self.image: Optional[AsyncImage] = AsyncImage(result.image, run) if result.image else None

    def __getattr__(self, name: str) -> Any:
        if name in AsyncResult._DATA:
            return getattr(self.sync, name)
        # A method of the sync result would block the loop (and not be
        # awaitable): refuse it rather than hand it out.
        hint = f" (the blocking one is result.sync.{name})" if hasattr(Result, name) else ""
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}{hint}")

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    @property
    def operation(self) -> "AsyncOperation":
        """The finished operation."""
        return AsyncOperation(self.sync.operation, self._run)

    def _img(self) -> AsyncImage:
        self.sync._img()  # raises NoImage with a clear message
        assert self.image is not None
        return self.image

    async def check(self) -> "AsyncResult":
        """Raise :class:`~arbor.CommandFailed` unless ``ok``; returns ``self``."""
        self.sync.check()
        return self

    async def run(self, command: Any = None, **kwargs: Any) -> "AsyncOperation":
        return await self._img().run(command, **kwargs)

    async def step(self, command: Any = None, **kwargs: Any) -> "AsyncResult":
        """Run on this result's image and wait; see :meth:`arbor.Image.step`."""
        return await self._img().step(command, **kwargs)

    async def branch(self, commands: Iterable[Command], **run_kwargs: Any) -> List["AsyncResult"]:
        return await self._img().branch(commands, **run_kwargs)

    async def ls(self, path: str = "/") -> List[FileEntry]:
        return await self._img().ls(path)

    async def read(self, path: str) -> bytes:
        return await self._img().read(path)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return await self._img().read_text(path, encoding)

    async def grep(self, pattern: Any, path: Any = None, **kw: Any) -> GrepResult:
        return await self._img().grep(pattern, path, **kw)

    async def diff(self, other: Any = None, path: Optional[str] = None) -> Diff:
        """Diff against ``other``; by default what this run changed (see
        :meth:`arbor.Result.diff`)."""
        return await self._run(self.sync.diff, _unwrap(other), path)

    async def set_tag(self, tag: str) -> AsyncImage:
        """Tag the result image; returns it."""
        return await self._img().set_tag(tag)


class AsyncOperation:
    """Async handle of an :class:`~arbor.Operation`."""

    def __init__(self, op: Operation, run: _Runner) -> None:
        self.sync = op
        self._run = run

    @property
    def id(self) -> str:
        return self.sync.id

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def wait(self, timeout: Optional[float] = None, *, check: Optional[bool] = None) -> AsyncResult:
        """Wait for the end; see :meth:`arbor.Operation.wait`."""
        try:
            r = await self._run(self.sync._wait, timeout, check, False)
        except CommandFailed as e:
            _warn_tag_not_set(e.result)
            raise
        _warn_tag_not_set(r)  # in the loop's thread, pointing at the caller's await
        return AsyncResult(r, self._run)

    async def status(self) -> str:
        return await self._run(lambda: self.sync.status)

    async def refresh(self) -> Dict[str, Any]:
        return await self._run(self.sync.refresh)

    async def cancel(self) -> bool:
        return await self._run(self.sync.cancel)

    async def write_stdin(self, data: Union[str, bytes], *, close: bool = False) -> None:
        await self._run(self.sync.write_stdin, data, close=close)

    async def fork(self, count: int = 1, *, pause_parent: bool = False) -> Any:
        """Fork the running instance; see :meth:`arbor.Operation.fork` (its
        copies are returned as synchronous operations)."""
        return await self._run(self.sync.fork, count, pause_parent=pause_parent)

    async def resume(self) -> None:
        await self._run(self.sync.resume)

    async def checkpoint(self) -> AsyncImage:
        """Save the running instance; see :meth:`arbor.Operation.checkpoint`."""
        return AsyncImage(await self._run(self.sync.checkpoint), self._run)

    async def expose(self, port: int, ttl: int = 3600) -> Any:
        """Expose a port; see :meth:`arbor.Operation.expose`."""
        return await self._run(self.sync.expose, port, ttl)

    async def previews(self) -> Any:
        return await self._run(self.sync.previews)

    async def unexpose(self, port: int) -> None:
        await self._run(self.sync.unexpose, port)

    async def events(self, **kwargs: Any) -> AsyncIterator[Event]:
        """Follow the event log; see :meth:`arbor.Operation.events`."""
        async for ev in self._run.iterate(self.sync.events(**kwargs)):
            yield ev

    async def output(self, **kwargs: Any) -> AsyncIterator[OutputChunk]:
        async for ch in self._run.iterate(self.sync.output(**kwargs)):
            yield ch


class AsyncImages:
    """Async :class:`~arbor.Images`."""

    def __init__(self, client: Client, run: _Runner) -> None:
        self._c = client
        self._run = run

    async def use(self, ref: Any) -> AsyncImage:
        return AsyncImage(await self._run(self._c.images.use, _unwrap(ref)), self._run)

    async def get(self, ref: Any) -> AsyncImage:
        return AsyncImage(await self._run(self._c.images.get, _unwrap(ref)), self._run)

    async def list(self, **kwargs: Any) -> List[AsyncImage]:
        return [AsyncImage(i, self._run) for i in await self._run(self._c.images.list, **kwargs)]

    async def import_image(self, url: str, **kwargs: Any) -> Union[AsyncImage, AsyncOperation]:
        r = await self._run(self._c.images.import_image, url, **kwargs)
        return AsyncImage(r, self._run) if isinstance(r, Image) else AsyncOperation(r, self._run)

    async def import_tar(self, source: Any, **kwargs: Any) -> AsyncImage:
        return AsyncImage(await self._run(self._c.images.import_tar, source, **kwargs), self._run)

    async def tag(self, image: Any, tag: str) -> AsyncImage:
        return AsyncImage(await self._run(self._c.images.tag, _unwrap(image), tag), self._run)

    async def untag(self, image: Any) -> AsyncImage:
        return AsyncImage(await self._run(self._c.images.untag, _unwrap(image)), self._run)

    async def delete(self, image: Any) -> None:
        await self._run(self._c.images.delete, _unwrap(image))


class AsyncFiles:
    """Async :class:`~arbor.Files`."""

    def __init__(self, client: Client, run: _Runner) -> None:
        self._c = client
        self._run = run

    async def upload(self, source: Any) -> UploadedFile:
        return await self._run(self._c.files.upload, source)

    async def get(self, sha256: str) -> UploadedFile:
        return await self._run(self._c.files.get, sha256)

    async def exists(self, sha256: str) -> bool:
        return await self._run(self._c.files.exists, sha256)

    async def list(self, **kwargs: Any) -> List[UploadedFile]:
        return await self._run(self._c.files.list, **kwargs)


class AsyncOperations:
    """Async :class:`~arbor.Operations`."""

    def __init__(self, client: Client, run: _Runner) -> None:
        self._c = client
        self._run = run

    async def get(self, op_id: str) -> AsyncOperation:
        return AsyncOperation(await self._run(self._c.operations.get, op_id), self._run)

    async def list(self, **kwargs: Any) -> List[AsyncOperation]:
        return [AsyncOperation(o, self._run) for o in await self._run(self._c.operations.list, **kwargs)]

    async def cancel(self, op_id: str) -> bool:
        return await self._run(self._c.operations.cancel, op_id)

    async def events(self, op_id: str, **kwargs: Any) -> AsyncIterator[Event]:
        async for ev in self._run.iterate(self._c.operations.events(op_id, **kwargs)):
            yield ev


class AsyncClient:
    """The asyncio client; arguments as for :class:`arbor.Client`, plus
    ``max_workers`` (threads for blocking calls, default 64)."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, max_workers: int = 64, **kwargs: Any) -> None:
        self.sync = Client(url, token, **kwargs)
        self._run = _Runner(max_workers)
        self.images = AsyncImages(self.sync, self._run)
        self.files = AsyncFiles(self.sync, self._run)
        self.operations = AsyncOperations(self.sync, self._run)

    async def whoami(self) -> Dict[str, Any]:
        return await self._run(self.sync.whoami)

    async def run(self, image: Any, command: Any = None, **kwargs: Any) -> AsyncOperation:
        img = await self.images.use(image)
        return await img.run(command, **kwargs)

    async def step(self, image: Any, command: Any = None, **kwargs: Any) -> AsyncResult:
        img = await self.images.use(image)
        return await img.step(command, **kwargs)

    async def branch(self, image: Any, commands: Iterable[Command], **run_kwargs: Any) -> List[AsyncResult]:
        img = await self.images.use(image)
        return await img.branch(commands, **run_kwargs)

    async def close(self) -> None:
        self.sync.close()
        self._run.pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
