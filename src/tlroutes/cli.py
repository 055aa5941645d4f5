"""The ``tlroutes`` command.

Errors tlroutes raises on purpose (bad run files, bad data, missing extras) are printed as one
clear message, without a traceback, and the command exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tlroutes.errors import TLRoutesError

if TYPE_CHECKING:
    from tlroutes.summary import Summary

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
    from tlroutes.cube_picture import draw_cube
    from tlroutes.routes.explain import cube_table, explain_table

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
    quick: Annotated[bool, typer.Option(
        help="A third of every example's epochs: a smoke test of all eight routes.")] = False,
    seeds: Annotated[int | None, typer.Option(
        help="Seeds per route (mean ± std). Default: 3, or 1 with --quick.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a stopped demo.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Run the eight routes on built-in data, print one table and write an index of reports."""
    from tlroutes.demo import run_demo

    summaries = run_demo(out, resume=resume, progress=not quiet, quick=quick, seeds=seeds)
    console.print(summary_table(summaries))
    index = out / "index.html"
    if index.is_file():
        console.print(f"reports: {index}")
    console.print(f"run folders under {out}")


@app.command()
def inspect(
    first: Annotated[str, typer.Argument(help="A run file (its problems are compared), or a "
                                         "dataset: NAME[:key=value,...], e.g. digits:n=500.")],
    second: Annotated[str | None, typer.Argument(help="The second dataset (the target), "
                                                  "e.g. digits:rotation=30.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the evidence here. Default: runs/inspect/<names>.json.")] = None,
    candidate: Annotated[list[str] | None, typer.Option(
        help="A trunk to rank for the target: NAME=TRUNK or NAME=TRUNK:WEIGHTS (a safetensors "
        "file of trunk weights); repeat for several.")] = None,
    source_run: Annotated[Path | None, typer.Option(
        help="A finished sequential run folder: its trained source model gives NCE and matched "
        "agreement on the target, and is ranked with LEEP and NCE as candidate 'source-run'.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the measurements.")] = 0,
    permutations: Annotated[int, typer.Option(help="Permutations of the MMD test.")] = 200,
    max_samples: Annotated[int, typer.Option(help="Samples per side for the tests.")] = 2000,
) -> None:
    """Measure whether two problems share a domain and a task, with controls; rank trunks."""
    from tlroutes.measure.display import evidence_tables
    from tlroutes.measure.evidence import inspect as inspect_
    from tlroutes.measure.evidence import load_data, source_model_from_run, trunk_candidates

    candidates, heads, model = None, None, None
    if candidate:
        target = load_data(second, seed, "second") if second else None
        candidates = trunk_candidates(candidate, target, first if second is None else None)
    if source_run is not None:
        model = source_model_from_run(source_run)
        candidates = {**(candidates or {}), "source-run": model.features}
        heads = {"source-run": model.get_head()}
    evidence = inspect_(first, second, candidates=candidates, source_heads=heads,
                        source_model=model, seed=seed, permutations=permutations,
                        max_samples=max_samples)
    for table in evidence_tables(evidence):
        console.print(table)
    path = json_out or Path("runs/inspect") / f"{_slug(first, second)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evidence.to_dict(), indent=2))
    console.print(f"evidence written to {path} ({evidence.seconds:.1f} s)")


@app.command()
def plan(
    run_file: Annotated[Path, typer.Argument(help="The run file (YAML); route: auto lets the "
                                             "plan choose.")],
    out: Annotated[Path | None, typer.Option(
        help="Folder for plan.json and cube.png. Default: runs/plan/<run file name>.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the measurements. Default: the "
                                             "run file's.")] = None,
    permutations: Annotated[int, typer.Option(help="Permutations of the MMD test.")] = 200,
    max_samples: Annotated[int, typer.Option(help="Samples per side for the tests.")] = 2000,
) -> None:
    """Name the route for a run file from what it declares and what is measured in its data."""
    from tlroutes.cube_picture import draw_cube
    from tlroutes.measure.display import plan_tables
    from tlroutes.planner import plan as plan_
    from tlroutes.routes.explain import cube_table

    result = plan_(run_file, seed=seed, permutations=permutations, max_samples=max_samples)
    console.print(cube_table(result.route))
    for table in plan_tables(result):
        console.print(table)
    out = out or Path("runs/plan") / run_file.stem
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(result.to_dict(), indent=2))
    draw_cube(result.route, out / "cube.png")
    console.print(f"plan: [bold]{result.route.title}[/] (route: {result.route.value}); "
                  f"written to {out}/plan.json and {out}/cube.png")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holds run.yaml).")],
) -> None:
    """Rebuild a run folder's report (report.html and report.md) from what the folder holds."""
    from tlroutes.reporting.build import build_report

    result = build_report(run_dir)
    for name in result.missing:
        why = result.why.get(name, "")
        console.print(f"[yellow]missing:[/] {escape(name)}" + (f" — {escape(why)}" if why else ""))
    console.print(f"report: {result.html}  (Markdown: {result.markdown})")


def _slug(*parts: str | None) -> str:
    import re

    text = "-vs-".join(Path(p).stem if p.endswith((".yaml", ".yml", ".npz")) else p
                       for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)[:120]


def summary_table(summaries: list[Summary] | list[dict]) -> Table:
    """One row per run: route, what was carried over, target metric, baseline, gain.

    ``summaries``: typed summaries, or their JSON dicts (as ``summary.json`` holds them).
    """
    from tlroutes.reporting import SUMMARY_COLUMNS, summary_rows

    table = Table(title="tlroutes: transfer against the from-scratch baseline")
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="right" if col in ("transfer", "baseline", "gain")
                         else "left")
    for row in summary_rows(summaries):
        table.add_row(*(row[col] for col in SUMMARY_COLUMNS))
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
