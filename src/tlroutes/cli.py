"""The ``tlroutes`` command.

Errors tlroutes raises on purpose (bad run files, bad data, missing extras) are printed as one
clear message, without a traceback, and the command exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tlroutes.errors import TLRoutesError

app = typer.Typer(
    name="tlroutes",
    help="Transfer learning by all eight of its routes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Off a terminal (logs, CI, pipes) rich would wrap tables at 80 columns; keep them whole.
console = Console(width=None if sys.stdout.isatty() else 160)


@app.command()
def routes(
    highlight: Annotated[str | None, typer.Option(
        help="A route to highlight, e.g. 'Task Adaptation' or task_adaptation.")] = None,
    picture: Annotated[Path | None, typer.Option(
        help="Also draw the 2×2×2 cube as a PNG at this path.")] = None,
    explain: Annotated[bool, typer.Option(
        help="Also list each route with its explanation and an example.")] = False,
) -> None:
    """Print the cube of eight routes (task × domain × order)."""
    from tlroutes.matrix import cube_table, draw_cube, explain_table

    console.print(cube_table(highlight))
    if explain:
        console.print(explain_table())
    if picture is not None:
        draw_cube(highlight, picture)
        console.print(f"cube picture written to {picture}")


@app.command()
def run(
    run_file: Annotated[Path, typer.Argument(help="The run file (YAML).")],
    out: Annotated[Path | None, typer.Option(
        help="The run folder. Default: runs/<run file name>.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a stopped run in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Train what a run file describes, against the from-scratch baseline."""
    from tlroutes.runner import run as run_file_

    out = out or Path("runs") / run_file.stem
    summary = run_file_(run_file, out, resume=resume, progress=not quiet)
    if _is_main_process():
        console.print(summary_table([summary]))
        console.print(f"run folder: {out}  (summary.json, metrics.jsonl, checkpoints/)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's run folders.")] = Path(
        "runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue a stopped demo.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Run the routes that have recipes on built-in data and print one table."""
    from tlroutes.demo import run_demo

    summaries = run_demo(out, resume=resume, progress=not quiet)
    console.print(summary_table(summaries))
    console.print(f"run folders under {out}")


def summary_table(summaries: list[dict]) -> Table:
    """One row per run: route, what was carried over, target metric, baseline, gain."""
    table = Table(title="tlroutes: transfer against the from-scratch baseline")
    for col in ("route", "carried over / shared", "metric", "transfer", "baseline", "gain",
                "also measured"):
        table.add_column(col, justify="right" if col in ("transfer", "baseline", "gain")
                         else "left")
    for s in summaries:
        name = s["primary_metric"]
        base = s.get("baseline") or {}
        gain = s.get("gain")
        gain_text = "-" if gain is None else f"{gain:+.3f}"
        if s.get("negative_transfer"):
            gain_text += " (negative transfer)"
        if s.get("gain_std") is not None:
            gain_text += f" ± {s['gain_std']:.3f}"
        also = "; ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in s.get("also", {}).items())
        table.add_row(
            s["route_title"], s.get("carried_over", ""), name, f"{s['metrics'][name]:.3f}",
            f"{base[name]:.3f}" if name in base else "-", gain_text, also,
        )
    return table


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; print deliberate errors as one message and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except TLRoutesError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False
        )
        sys.exit(2)
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
