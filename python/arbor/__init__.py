"""arbor: sandboxes that branch like git — the Python SDK.

Quick start::

    from arbor import Client

    c = Client()                                   # finds the local daemon and token
    base = c.images.use("busybox")                 # a uuid, "tag:NAME" or a bare tag
    env = base.run(shell="mkdir -p /w && echo base > /w/s", disposable=False).wait()
    runs = {n: env.run(shell=f"echo {n} > /w/{n} && test -f /w/s") for n in ("retry", "pool", "async")}
    for n, op in runs.items():                     # all three started at once
        print(n, "PASS" if op.wait().exit_code == 0 else "FAIL")

Standard library only. See README.md for beam search and best-of-N.
"""

from ._http import RetryPolicy
from ._version import __version__
from .client import Client, Images, Operations, discover
from .errors import (
    ArborError,
    BadRequest,
    CommandFailed,
    ConfigError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    HTTPError,
    NoImage,
    NotFound,
    OperationCancelled,
    OperationError,
    OperationFailed,
    RateLimited,
    ServerError,
    TooEarly,
    TooLarge,
    Unauthorized,
    Unprocessable,
    WaitTimeout,
)
from .files import Files
from .models import (
    Change,
    Diff,
    Event,
    FileEntry,
    FileSpec,
    GrepMatch,
    GrepResult,
    OutputChunk,
    UploadedFile,
)
from .objects import Fork, Image, Lineage, Operation, Preview, Result, as_completed, branch

__all__ = [
    "__version__",
    "Client",
    "Images",
    "Operations",
    "Files",
    "discover",
    "RetryPolicy",
    "Image",
    "Operation",
    "Fork",
    "Preview",
    "Result",
    "Lineage",
    "branch",
    "as_completed",
    "Change",
    "Diff",
    "Event",
    "FileEntry",
    "FileSpec",
    "GrepMatch",
    "GrepResult",
    "OutputChunk",
    "UploadedFile",
    "ArborError",
    "ConfigError",
    "ConnectionFailed",
    "HTTPError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Gone",
    "TooLarge",
    "Unprocessable",
    "TooEarly",
    "RateLimited",
    "ServerError",
    "OperationError",
    "OperationFailed",
    "OperationCancelled",
    "WaitTimeout",
    "CommandFailed",
    "NoImage",
]
