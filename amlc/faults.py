"""Faults that are nobody's item's fault: they stop `amlc run` with a cause a user can act on.

A full disk, a store locked by another program or a bug would otherwise fail every item in
turn (burning their retry budgets) or stall the daemon without a word. The engine stops on
them instead, and these messages say what happened and what to do.
"""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
from pathlib import Path

from .workers.process import WorkerStartError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NOTHING_LOST = "nothing done so far is lost"


# What varies between failures of one cause: file paths, quoted text, numbers (sizes, seconds,
# byte counts). An HTTP status is the cause itself, so 'http 404' and 'http 503' stay apart.
_PATH = re.compile(r"(?<![\w.])/\S.*$")   # a path runs to the end of the message's head
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<!http )\b\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")
CAUSE_LENGTH = 60


def failure_cause(error: str) -> str:
    """The cause of a failure, for counting: the message before its first ':' or '(' with
    paths, quoted text and numbers made generic ('connection broke mid-body (received 10 of
    200 bytes)' and '... (received 3 of 9 bytes)' are one cause)."""
    head = re.split(r"[:(]", error, maxsplit=1)[0]
    head = _NUMBER.sub("N", _PATH.sub("PATH", _QUOTED.sub("'...'", head)))
    return " ".join(head.split())[:CAUSE_LENGTH] or error[:CAUSE_LENGTH]


class RunFailed(RuntimeError):
    """`amlc run` stopped on a fatal fault; the message is for the user."""


class DiskNearlyFull(OSError):
    """A write refused to keep the free space the store needs to record what was done."""

    def __init__(self, free: int, reserve: int) -> None:
        super().__init__(errno.ENOSPC, f"{free / 1e6:.1f} MB free, below the {reserve / 1e6:.0f} MB "
                                       f"amlc keeps for its store")
        self.reserve = reserve


def is_fatal(exc: BaseException) -> bool:
    """Whether `exc` says the machine, the store or the workers are unusable, not that one item
    is bad."""
    if isinstance(exc, WorkerStartError):
        return True
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS | {errno.EFBIG, errno.EROFS}:
        return True
    return isinstance(exc, sqlite3.Error)


def describe_fatal(exc: BaseException, where: str, root: Path | None = None) -> str:
    """One sentence on what stopped the run and what to do about it."""
    folder = str(root) if root else "the work folder"
    text = str(exc)
    if _disk_full(exc):
        kept = f", below the {exc.reserve / 1e6:.0f} MB kept for the store" if isinstance(exc, DiskNearlyFull) else ""
        return (f"the disk holding {folder} is full ({_free_mb(root)} free{kept}): free space, or move "
                f"the work folder to a bigger disk, and run again; {NOTHING_LOST}")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return (f"a file in {folder} reached the size limit for this process (ulimit -f): raise "
                f"the limit and run again; {NOTHING_LOST}")
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system: remount it writable and run again; {NOTHING_LOST}"
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        waited = getattr(exc, "waited", None)
        how_long = f"for {waited:.0f} s (--store-wait)" if waited is not None else "past the busy timeout"
        return (f"the store in {folder} stayed locked by another program {how_long}: "
                f"close whatever else writes amlc.db and run again; {NOTHING_LOST}")
    if isinstance(exc, WorkerStartError):
        return f"{text}: fix the cause and run again; {NOTHING_LOST}"
    if isinstance(exc, sqlite3.Error):
        return (f"the store in {folder} could not be written ({type(exc).__name__}: {text}); "
                f"check the disk, then run again; {NOTHING_LOST}")
    return (f"internal error in {where}: {type(exc).__name__}: {text} (a bug in amlc; the "
            f"traceback follows); {NOTHING_LOST}")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.Error) and ("full" in str(exc) or "SQLITE_FULL" in str(exc))


def _free_mb(root: Path | None) -> str:
    try:
        return f"{shutil.disk_usage(root or Path.cwd()).free / 1e6:.1f} MB"
    except OSError:
        return "unknown space"
