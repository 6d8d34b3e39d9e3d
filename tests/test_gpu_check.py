"""bench/gpu_check.sh, the first thing a session with a GPU runs, rehearsed on this CPU (DRY=1):
its steps, logs, agreement checks and table, so that the GPU day is not lost to a script error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = """#!/bin/sh
# nvidia-smi's answers to the queries gpu_check.sh makes, for a machine without one
case "$*" in
  *compute_cap*) echo 9.0 ;;
  *memory.used*) echo 0 ;;
  *) echo "stand-in GPU, 81559 MiB, 0.0" ;;
esac
"""


@pytest.mark.slow
def test_gpu_check_rehearsal_runs_every_step_and_agrees_with_the_cpu(tmp_path: Path) -> None:
    from amlc.llm.gguf import converter_dir

    try:
        converter_dir()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(STAND_IN)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DRY": "1", "DRY_IMAGES": "4",
           "STEPS": "2", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("agreement with the CPU"):]
    for step in ("PaddleOCR, CUDA, 1 worker", "LoRA on SmolLM2 (peft), 2 steps x 8 rows", "merge + GGUF + Q8_0",
                 "predict, every layer on the GPU, rows together", "predict, every layer on the GPU, one by one"):
        assert step in table, table
    # On a CPU every path computes the same: the texts, the rules' answers and the model's
    # answers (rows scored 8 together or one by one) must all agree with the CPU run's.
    agreements = re.findall(r"(\d+)/(\d+) \((\d+\.\d)%\)", table)
    assert len(agreements) == 4 and all(a == b and int(b) > 0 for a, b, _ in agreements), table
    assert (tmp_path / "out" / "logs" / "predict_gpu_batched.log").exists()
