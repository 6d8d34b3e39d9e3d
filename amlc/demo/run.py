"""The demo's steps, each skipped when the work folder shows it done, so an interrupted demo
resumes: render -> serve -> ingest -> pipeline (fetch, OCR, rules) -> LLM (SFT rows, base, LoRA,
GGUF + quantize, predict) -> submission -> F1 of rules and model side by side.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..check import check_submission
from ..export import Answered, best_answers, render_submission, write_atomically
from ..ingest import ingest
from ..metric import Report
from ..pipeline import RunConfig, run_pipeline
from ..report import evaluate_split
from ..store import fetch_all, open_reader, open_writer
from ..workdir import Workdir
from .data import SPLITS, Item, render_dataset, write_csvs
from .sizes import SIZES, DemoSize
from .serve import URL_PREFIX, ImageServer

console = Console(soft_wrap=True)  # long paths and the F1 table stay on one line
RULES = "rules"



@dataclass(frozen=True)
class DemoOptions:
    size: str = "small"
    seed: int = 0
    skip_llm: bool = False
    keep_server: bool = False
    threads: int = 1           # torch and llama.cpp threads (shared cores: one is fastest)


class Steps:
    """Numbered progress lines: `with steps("OCR"):` prints the step, its outcome and its time."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0

    def start(self, title: str) -> float:
        self.n += 1
        console.print(f"[bold cyan][{self.n}/{self.total}][/] {title}")
        return time.perf_counter()

    @staticmethod
    def done(started: float, note: str) -> None:
        console.print(f"      {note} [dim]({time.perf_counter() - started:.1f} s)[/]", highlight=False)


def run_demo(wd: Workdir, options: DemoOptions) -> dict:
    """Run (or resume) the whole demo in wd; returns the scores and the submission path."""
    size = SIZES[options.size]
    folder = _demo_folder(wd, options)
    steps = Steps(4 if options.skip_llm else 5)
    t = steps.start(f"render {size.train}/{size.val}/{size.test} train/val/test product labels")
    items = render_dataset(folder, size.counts, options.seed)
    steps.done(t, f"{len(items)} images in {folder / 'images'}")
    with ImageServer(folder / "images", prefer_port=_saved_port(folder)) as server:
        t = steps.start(f"serve images at {server.url} and ingest the CSVs")
        csvs = _prepare_csvs(wd, folder, items, server)
        steps.done(t, _ingest_all(wd, csvs))
        t = steps.start("pipeline: download -> OCR -> rules (amlc run)")
        steps.done(t, _pipeline(wd))
        model = None if options.skip_llm else _llm(wd, size, options, steps)
        result = _finish(wd, csvs["test"], size.source if model else None, steps)
        if options.keep_server:
            _serve_until_interrupted(server)
    return result


def _demo_folder(wd: Workdir, options: DemoOptions) -> Path:
    """workdir/demo; a work folder holds one demo size (mixing would blur the scores)."""
    folder = wd.root / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "demo.json"
    wanted = {"size": options.size, "seed": options.seed}
    if info.exists():
        have = json.loads(info.read_text())
        if {k: have.get(k) for k in wanted} != wanted:
            raise DemoError(f"{wd.root} holds a demo with {have}; use another --workdir for {wanted}")
    else:
        info.write_text(json.dumps(wanted))
    return folder


class DemoError(RuntimeError):
    pass


def _saved_port(folder: Path) -> int:
    path = folder / "server.json"
    return json.loads(path.read_text())["port"] if path.exists() else 0


def _prepare_csvs(wd: Workdir, folder: Path, items: list[Item], server: ImageServer) -> dict[str, Path]:
    """CSVs pointing at this server; a resumed demo that got another port relinks the store."""
    asyncio.run(_relink(wd, server))
    (folder / "server.json").write_text(json.dumps({"port": server.port}))
    return write_csvs(folder, items, server.url)


async def _relink(wd: Workdir, server: ImageServer) -> None:
    """Point the demo's image links served on any other local port at this server."""
    if not wd.store.exists():
        return
    conn = await open_writer(wd.store)
    try:
        await conn.execute("""
            UPDATE images SET link = :new || substr(link, instr(link, :path) + length(:path))
            WHERE link LIKE :pattern AND substr(link, 1, length(:new)) != :new""",
                           {"new": server.url, "path": URL_PREFIX, "pattern": f"http://{server.host}:%{URL_PREFIX}%"})
        await conn.commit()
    finally:
        await conn.close()


def _ingest_all(wd: Workdir, csvs: dict[str, Path]) -> str:
    async def go() -> list[str]:
        conn = await open_writer(wd.store)
        try:
            return [f"{s} {(r := await ingest(conn, csvs[s], s)).inserted} new/{r.rows}" for s in SPLITS]
        finally:
            await conn.close()
    return "samples: " + ", ".join(asyncio.run(go()))


def _pipeline(wd: Workdir) -> str:
    """run_pipeline resumes by itself: only jobs not done are claimed."""
    result = asyncio.run(run_pipeline(wd, RunConfig(exit_when_done=True, dashboard=True, log_every=15.0)))
    stats = result.raise_if_failed().engine.stats.items()
    return ", ".join(f"{name} {s.done} done / {s.failed} failed" for name, s in stats) \
        + f"; store: {_stage_summary(wd)}"


def _stage_summary(wd: Workdir) -> str:
    async def go():
        conn = await open_reader(wd.store)
        try:
            return await fetch_all(conn, "SELECT stage, state, n FROM stage_counts ORDER BY stage, state")
        finally:
            await conn.close()
    return ", ".join(f"{r['stage']} {r['state']} {r['n']}" for r in asyncio.run(go()))


def _llm(wd: Workdir, size: DemoSize, options: DemoOptions, steps: Steps) -> Path | None:
    """Fine-tune, export and predict; on failure say why and go on with the rules alone."""
    from . import llm_steps

    t = steps.start(f"LLM: LoRA on {'a tiny Llama built here' if size.base == 'tiny' else 'SmolLM2-135M'}"
                    f" -> GGUF -> quantize -> predict val/test as {size.source!r}")
    try:
        model = llm_steps.run(wd, size, options.threads, say=lambda m: console.print(f"      {m}", highlight=False))
    except Exception as exc:  # the rules' results still stand; the reason is shown, not hidden
        console.print(f"      [red]LLM step unavailable:[/] {exc}", highlight=False)
        console.print("".join(traceback.format_exception(exc, limit=-3)), markup=False, style="dim")
        return None
    steps.done(t, f"model {model}")
    return model


def _finish(wd: Workdir, test_csv: Path, model: str | None, steps: Steps) -> dict:
    t = steps.start("score rules and model on the labelled val split, export the submission")
    reports = asyncio.run(_scores(wd, [RULES] + ([model] if model else [])))
    best = max(reports, key=lambda s: reports[s].numeric.f1)
    out = wd.root / "submission.csv"
    answers = asyncio.run(_answers(wd, "test", best))
    write_atomically(out, render_submission(answers))
    check = check_submission(out, test_csv)
    verdict = "passes amlc check" if check.ok else f"FAILS amlc check: {check.problems[:3]}"
    steps.done(t, f"{out}: {check.rows} rows, {check.answered} answered from {best!r} (best on val); {verdict}")
    console.print(f_table(reports), markup=False, highlight=False)
    return {"submission": str(out), "check_ok": check.ok, "best": best,
            "f1": {s: {"numeric": r.numeric.f1, "strict": r.strict.f1} for s, r in reports.items()}}


async def _scores(wd: Workdir, sources: list[str]) -> dict[str, Report]:
    conn = await open_reader(wd.store)
    try:
        return {s: (await evaluate_split(conn, "val", (s,), only=True))[0] for s in sources}
    finally:
        await conn.close()


async def _answers(wd: Workdir, split: str, source: str) -> list[Answered]:
    conn = await open_reader(wd.store)
    try:
        # a model's blank gives way to the rules' answer, as in `amlc export`
        return await best_answers(conn, split, (source, RULES), only=True, skip_blanks=True)
    finally:
        await conn.close()


def f_table(reports: dict[str, Report]) -> str:
    """F1 per entity of each source side by side, numeric then strict."""
    sources = list(reports)
    head = f"{'F1 on val':32} {'n':>5}" + "".join(f" {s[:18]:>18} {'strict':>7}" for s in sources)
    lines = [head, "-" * len(head)]
    entities = sorted({e for r in reports.values() for e in r.per_entity})
    for entity in [*entities, "all"]:
        cells, n = "", 0
        for report in reports.values():
            num, strict = (report.numeric, report.strict) if entity == "all" else \
                report.per_entity.get(entity, (None, None))
            if num is None:
                cells += f" {'-':>18} {'-':>7}"
                continue
            n = num.tp + num.fp + num.fn + num.tn
            cells += f" {num.f1:>18.3f} {strict.f1:>7.3f}"
        lines.append(f"{entity:32} {n:>5}{cells}")
    return "\n".join(lines)


def _serve_until_interrupted(server: ImageServer) -> None:
    console.print(f"serving {server.url} (e.g. {server.link('val-00000.jpg')}); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopped serving")
