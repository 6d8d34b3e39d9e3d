"""OCR and predict workers as actors on a real Ray cluster, started here once for the module on
127.0.0.1 only (2 CPUs, no dashboard) and stopped after it: the real test images give the same
OCR text and answers as the local pool, inputs reach the actors only as bytes, and an actor
killed mid-batch loses nothing."""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from amlc.workers.ray import LOOPBACK_ENV

os.environ.setdefault(LOOPBACK_ENV, "0")  # before ray is imported, here and in every amlc started

import pytest
import ray

from amlc.llm.gguf import cache_dir
from amlc.llm.assets import fetch_smollm2
from amlc.ocr import OcrSpec, load_engine
from amlc.workers import Failed, WorkerStartError
from amlc.workers.ray import RayPool, actor_resources, connect, ray_pool

from images import DATA, real_images
from store_helpers import amlc, query, write_csv

HEADER = ["index", "image_link", "group_id", "entity_name"]
RUN = ["run", "--no-dashboard", "--exit-when-done", "--timeout", "5", "--backoff", "0.05"]
ACTOR_TITLE = b"ray::AmlcWorker"  # Ray names an actor's process after its class (and method)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The GCS address of a Ray cluster this process started (`amlc run --ray local`'s path)."""
    leave = connect("local", num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        leave()
    assert not ray.is_initialized()


def ingest_test_rows(workdir: Path, server, paths: list[Path]) -> int:
    """The official test.csv rows of these images, their links pointing at the local server."""
    names = {p.name for p in paths}
    with (DATA / "test.csv").open(newline="") as handle:
        rows = [[r["index"], server.url(f"/images/I/{name}"), r["group_id"], r["entity_name"]]
                for r in csv.DictReader(handle) if (name := r["image_link"].rsplit("/", 1)[-1]) in names]
    amlc(workdir, "ingest", str(write_csv(workdir / "in.csv", HEADER, rows)), "--split", "t")
    return len(rows)


def outputs(store: Path) -> tuple[dict, dict]:
    """(image file -> OCR lines, (row, source) -> answer and its detail) as the store holds them."""
    lines = {link.rsplit("/", 1)[-1]: text for link, text in query(
        store, "SELECT i.link, o.lines FROM ocr_results o JOIN images i ON i.id = o.image_id")}
    answers = {(idx, source): (prediction, _without_times(detail)) for idx, source, prediction, detail in query(
        store, "SELECT s.idx, p.source, p.prediction, p.detail FROM predictions p "
               "JOIN samples s ON s.id = p.sample_id")}
    return ({name: re.sub(r'"seconds":[0-9.e-]+', "", text) for name, text in lines.items()}, answers)


def _without_times(detail: str | None) -> dict | None:
    """An answer's detail less when its inputs were stored: each run's store has its own times."""
    made = json.loads(detail) if detail else None
    return {k: v for k, v in made.items() if k not in ("ocr_at", "rules_at")} if made else made


def test_the_local_cluster_listens_on_loopback_only(cluster: str) -> None:
    addresses = _listening(_tree(os.getpid()))
    assert addresses, "no listening socket found for the cluster's processes"
    assert all(a.is_loopback or (a.version == 6 and a.ipv4_mapped and a.ipv4_mapped.is_loopback)
               for a in addresses), addresses


def test_actors_answer_like_the_local_pool(cluster: str, tmp_path: Path, image_server) -> None:
    """download -> OCR -> rules -> SmolLM2, once with engines in this process, once as actors."""
    model = fetch_smollm2(cache_dir())  # set-up (bin/fetch-models) put it in the cache
    paths = real_images(4, stride=47)
    got = {}
    for name, where in [("local", ["--ocr-workers", "0", "--llm-workers", "0"]),
                        ("ray", ["--ray", cluster, "--ocr-workers", "1", "--llm-workers", "1"])]:
        workdir = tmp_path / name
        workdir.mkdir()
        rows = ingest_test_rows(workdir, image_server, paths)
        result = amlc(workdir, *RUN, "--model", str(model), *where)
        got[name] = outputs(workdir / "amlc.db")
    lines, answers = got["ray"]
    assert got["ray"] == got["local"]
    assert len(lines) == len(paths) and sum('"text":' in text for text in lines.values()) >= 2
    answered = {idx for idx, source in answers if source == "rules"} & {
        idx for idx, source in answers if source == model.stem}
    assert len(answered) == rows  # every row has the rules' answer and the model's
    assert re.search(r"ocr\s+workers\s+1/1\s+live,\s+0\s+restarts", result.output)
    assert re.search(r"predict:SmolLM2\S+\s+workers\s+1/1\s+live,\s+0\s+restarts", result.output)


def test_inputs_reach_the_actors_as_bytes_read_here(cluster: str, tmp_path: Path) -> None:
    """Inputs are names only this process can resolve (relative to a folder the actors never
    see): the actors read what one local engine reads, and a bad file fails alone."""
    paths = real_images(6, stride=29)
    (tmp_path / "page.jpg").write_text("<html>404</html>")
    names = [p.name for p in paths[:3]] + ["page.jpg"] + [p.name for p in paths[3:]]
    for path in paths:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    expected = load_engine("rapidocr").read(paths)

    pool = RayPool(OcrSpec("rapidocr"), 2, actor_resources(), ship=lambda name: (tmp_path / name).read_bytes())
    try:
        got = asyncio.run(pool.run(names))
        stats = pool.stats()
        pids = {int(w.worker.rsplit(" ", 1)[1]) for w in stats}
        # a cluster started for the run: its actors have the run's priority (Ray's default is nice 15)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {os.getpriority(os.PRIO_PROCESS, 0)}
    finally:
        pool.close()
    assert isinstance(got[3], Failed) and got[3].error.startswith("OcrError: image 0: not an image")
    read = got[:3] + got[4:]
    assert [r.lines for r in read] == [r.lines for r in expected]
    assert {r.preprocess["runtime"] for r in read} == {"openvino"}  # the CPU default, in the actors too
    # the batch failed whole, was split and re-run one by one on both actors
    assert sum(w.done for w in stats) == len(paths) and all(w.done for w in stats)
    assert len(pids) == 2 and os.getpid() not in pids


def test_an_actor_that_cannot_build_its_engine_stops_the_pool_with_its_reason(cluster: str) -> None:
    with pytest.raises(WorkerStartError, match="worker on 127.0.0.1 pid .* unknown OCR engine 'tesseract'"):
        RayPool(OcrSpec("tesseract"), 1, actor_resources())


def test_actors_the_cluster_cannot_hold_are_refused_at_once(cluster: str) -> None:
    with pytest.raises(WorkerStartError, match="no room for an actor needing 1 CPU, 1 GPU"):
        ray_pool(OcrSpec("rapidocr"), None, gpus=1)
    with pytest.raises(WorkerStartError, match=r"3 actors needing 1 CPU, 0 GPU each do not fit on the Ray cluster \(2 CPU"):
        ray_pool(OcrSpec("rapidocr"), 3)


def test_a_head_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "amlc", "--workdir", str(tmp_path), *RUN, "--stages", "ocr",
                          "--ray", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert f"no Ray head answers at 127.0.0.1:{port}" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("args, why", [
    (["--ocr-gpus", "0.25"], "--ocr-gpus and --llm-gpus are actor resources: they need --ray"),
    (["--ray", "local", "--ocr-device", "cuda"], "give each OCR actor a GPU share with --ocr-gpus"),
    (["--ray", "local", "--ocr-workers", "0"], "with --ray, workers are actors: give 1 or more"),
])
def test_ray_options_that_do_not_go_together_are_refused_before_anything_starts(
        tmp_path: Path, args: list[str], why: str) -> None:
    result = amlc(tmp_path, *RUN, *args, ok=False)
    assert result.exit_code == 2 and why in result.output


def test_killing_an_actor_mid_batch_loses_nothing_and_retries_its_image(
        cluster: str, tmp_path: Path, image_server) -> None:
    paths = real_images(10, stride=19)
    rows = [[i, image_server.url(f"/images/I/{p.name}"), "1", "item_weight"] for i, p in enumerate(paths)]
    amlc(tmp_path, "ingest", str(write_csv(tmp_path / "in.csv", HEADER, rows)), "--split", "t")
    run = subprocess.Popen([sys.executable, "-m", "amlc", "--workdir", str(tmp_path), *RUN, "--ray", cluster,
                            "--ocr-workers", "2", "--ocr-batch", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_until_an_image_is_read(tmp_path / "amlc.db")  # the actors are up and busy
        _kill_an_actor_mid_batch()
        output, _ = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 0, output
    store = tmp_path / "amlc.db"
    jobs = query(store, "SELECT state, attempts FROM jobs WHERE stage = 'ocr'")
    assert {state for state, _ in jobs} == {"done"} and len(jobs) == len(paths)
    # the killed actor's image came back DIED, spent one try, and was read by another actor
    assert sorted(attempts for _, attempts in jobs) == [1] * (len(paths) - 1) + [2]
    assert query(store, "SELECT count(*) FROM ocr_results") == [(len(paths),)]
    assert query(store, "SELECT state, count(*) FROM jobs WHERE stage = 'extract' GROUP BY 1") == [("done", len(paths))]
    assert re.search(r"ocr\s+workers\s+[12]/2\s+live,\s+1\s+restarts", output), output[-2000:]


# --- the cluster's processes, from /proc ------------------------------------------------------

def _tree(root: int) -> set[int]:
    """root and all its descendants (the cluster this process started, and its actors)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
        except OSError:
            continue
        parent[int(pid)] = int(rest.rsplit(")", 1)[1].split()[1])
    tree = {root}
    while grown := {pid for pid, ppid in parent.items() if ppid in tree} - tree:
        tree |= grown
    return tree


def _listening(pids: set[int]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses these processes' TCP sockets listen on (/proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # the kernel prints each 32-bit word in host (little-endian) order
                found.append(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))))
    return found


def _actor_processes() -> list[int]:
    return [pid for pid in _tree(os.getpid()) if _title(pid).startswith(ACTOR_TITLE)]


def _title(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kill_an_actor_mid_batch(timeout: float = 120) -> None:
    """SIGKILL an OCR actor while it runs a batch: stopped first, so it cannot finish in between
    (Ray titles the process `ray::AmlcWorker.run` until the call has returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _actor_processes():
            if not _title(pid).startswith(ACTOR_TITLE + b".run"):
                continue
            os.kill(pid, signal.SIGSTOP)
            if _title(pid).startswith(ACTOR_TITLE + b".run"):
                os.kill(pid, signal.SIGKILL)
                return
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("no OCR actor found running a batch")


def _wait_until_an_image_is_read(store: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists():
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as con:
                if con.execute("SELECT 1 FROM ocr_results LIMIT 1").fetchone():
                    return
        time.sleep(0.2)
    raise AssertionError(f"no image read after {timeout} s")


def test_amlc_keeps_its_own_cluster_on_loopback_unasked() -> None:
    """`--ray local` sets the loopback switch itself before Ray is imported: a process started
    without it in its environment still gets a cluster whose node address is 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k != LOOPBACK_ENV}
    code = ("from amlc.workers.ray import connect\nleave = connect('local', num_cpus=1)\nimport ray\n"
            "print(ray.util.get_node_ip_address())\nleave()")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "127.0.0.1", done.stdout
