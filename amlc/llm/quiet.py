"""Libraries' output to a log file, so amlc's own progress lines and tables stay readable.

Training, GGUF conversion and quantization print from C and from Python (datasets' and
transformers' bars, llama.cpp's loader and its quantizer's line per tensor) straight to file
descriptors 1 and 2. `output_to(log)` points both at the log while amlc's own lines go to the
user's terminal or pipe through `own(1)` / `own(2)`, which `Progress` and the LLM commands use.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

_own: dict[int, TextIO] = {}  # the user's stdout (1) and stderr (2) while output_to is active


def own(fd: int = 2) -> TextIO:
    """Where amlc's own lines go: the user's stdout (1) or stderr (2), even inside output_to."""
    return _own.get(fd) or (sys.stdout if fd == 1 else sys.stderr)


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (and Python's streams, which write to them) to log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    outer = dict(_own)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        try:
            for fd in saved:
                _own[fd] = outer.get(fd) or os.fdopen(os.dup(saved[fd]), "w", buffering=1)
                os.dup2(handle.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
                if fd not in outer:
                    _own.pop(fd).close()
