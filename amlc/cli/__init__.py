"""The `amlc` command: one CLI, a subcommand per job, all working on one work folder."""

from __future__ import annotations

import importlib

import click

from ..workdir import DEFAULT_WORKDIR, Workdir

# command -> the module (amlc.cli.<module>) defining it: a command imports only what it needs,
# so `amlc status` does not load numpy, aiohttp and the OCR and LLM stacks first
COMMAND_MODULES = {
    "ingest": "data", "export": "data", "check": "data", "eval": "data",
    "status": "query", "show": "query", "report": "query", "sql": "query",
    "run": "pipeline", "predict": "pipeline",
    "eval-text": "extract",
    "tiny-model": "llm", "sft-data": "llm", "train": "llm", "export-model": "llm", "llm-bench": "llm",
    "demo": "demo",
}


class LazyGroup(click.Group):
    """Subcommands listed by name, their modules imported when one is used (or for --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(name)
        if module is None:
            return None
        commands = importlib.import_module(f"{__name__}.{module}").COMMANDS
        return next(c for c in commands if c.name == name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--workdir", "-w", envvar="AMLC_WORKDIR", type=click.Path(file_okay=False),
              default=DEFAULT_WORKDIR, show_default=True, show_envvar=True,
              help="Work folder holding the store (amlc.db), images, models and exports.")
@click.version_option(package_name="amlc")
@click.pass_context
def main(ctx: click.Context, workdir: str) -> None:
    """Turn product images into entity values ("<number> <unit>") as the Amazon ML
    Challenge 2024 asks, resumably: ingest CSVs, download and OCR images, extract answers,
    and export a checked submission.

    \b
    Typical session:
      amlc ingest ../shared/data/test.csv --split test
      amlc run --exit-when-done
      amlc status
      amlc export submission.csv --split test
    """
    ctx.obj = Workdir.resolve(workdir)
