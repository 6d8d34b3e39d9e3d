"""The `amlc` command: one CLI, a subcommand per job, all working on one work folder."""

from __future__ import annotations

import click

from ..workdir import DEFAULT_WORKDIR, Workdir


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def _register() -> None:
    from . import data, demo, extract, llm, pipeline, query

    for module in (data, query, pipeline, extract, llm, demo):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
