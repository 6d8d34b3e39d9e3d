"""Send what libraries print at the C level (llama.cpp's loader and quantizer, progress bars)
to a log file, so the demo's own progress stays readable."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 (and Python's streams, which write to them) to log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(log, "ab") as handle:
        try:
            for fd in saved:
                os.dup2(handle.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
