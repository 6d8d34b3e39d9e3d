"""`amlc demo`: the whole job on a small synthetic dataset, offline, in one command."""

from __future__ import annotations

import click

from .common import workdir


@click.command("demo")
@click.option("--size", type=click.Choice(["tiny", "small", "full"]), default="small", show_default=True,
              help="tiny: 52 images, a tiny Llama built here (~1 min); small: 176 images, SmolLM2-135M, "
                   "20 LoRA steps (~4 min on 2 shared cores, models cached); full: 880 images, "
                   "200 LoRA steps (~25 min).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the rendered dataset.")
@click.option("--skip-llm", is_flag=True, help="Rules only: no fine-tuning, no model predictions.")
@click.option("--keep-server", is_flag=True, help="Keep serving the images at the end until Ctrl-C.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch / llama.cpp threads.")
@click.pass_context
def demo_command(ctx: click.Context, size: str, seed: int, skip_llm: bool, keep_server: bool,
                 threads: int) -> None:
    """Run the whole job offline on product labels rendered here: serve them on 127.0.0.1,
    ingest train/val/test CSVs, download -> OCR -> rules, LoRA-tune an LLM on the train
    split's OCR text, export it to GGUF and quantize it, answer val/test with it, write a
    checked WORKDIR/submission.csv and print the F1 of rules and model side by side.

    Every step is skipped when the work folder shows it done, so an interrupted demo resumes
    where it stopped. Inspect it afterwards with `amlc status` and `amlc show`.

    \b
    Examples:
      amlc demo                         # ./amlc-work, size small
      amlc -w demo-work demo --size tiny   # a quick look
      amlc demo --skip-llm --keep-server
    """
    import asyncio

    from ..demo.run import DemoError, DemoOptions, run_demo
    from ..runlock import AlreadyRunning

    try:
        run_demo(workdir(ctx), DemoOptions(size, seed, skip_llm, keep_server, threads))
    except (DemoError, AlreadyRunning) as exc:
        raise click.ClickException(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("stopped; finished work is kept: run the same command again to resume")
        raise SystemExit(130) from None


COMMANDS = [demo_command]
