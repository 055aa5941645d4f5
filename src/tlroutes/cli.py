"""The ``tlroutes`` command.

Exit status:

- **0**: done.
- **1**: an unexpected error (a bug, or the machine: out of memory, disk full): its traceback,
  then one line saying what stopped and whether ``--resume`` can continue.
- **2**: a usage error (an unknown option, a missing argument: one line and a pointer to
  ``--help``), or an error tlroutes raises on purpose (a bad run file, bad data, a missing extra):
  one clear message, without a traceback.
- **3**: a Parallel Training run finished but some of its jobs failed (each is named with its
  cause); ``--allow-failed-jobs`` makes that 0.
- **130**: interrupted (Ctrl-C); ``--resume`` continues the run.

A run that stops says what failed and what to do next. It also leaves ``failed.json`` in its run
folder (what stopped it, and whether a resume can fix it), so that ``--resume`` after a failure a
resume would only repeat — a diverged loss (a resume repeats the run exactly), bad data — says
so at once instead of training into the same failure.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tlroutes.cli_use import export, manifest, predict
from tlroutes.errors import (
    TLRoutesError,
    clip_message,
    shorten,
)
from tlroutes.runfolder import write_json
from tlroutes.runfolder.failure import FAILURE_FILE, REPEATING_ERRORS, is_recorded, read_failure

if TYPE_CHECKING:
    from tlroutes.summary import Summary

# Bounds of the numeric options (as the run file's own: a value past them is a usage error).
#: Permutations of the MMD test: 100,000 already resolve p-values far below any threshold.
MAX_PERMUTATIONS = 100_000
#: Samples per side of the measurements, and the largest seed.
MAX_SAMPLES, MAX_SEED = 10_000_000, 2**63 - 1
#: Measurement seeds behind a domain verdict by default and at most (the default is
#: tlroutes.measure.domain.VERDICT_SEEDS, written out so that `--help` needs no torch import).
VERDICT_SEEDS, MAX_VERDICT_SEEDS = 5, 101

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


#: Exit status of a Parallel Training run with failed jobs (see the module's docstring).
EXIT_FAILED_JOBS = 3

@app.command()
def run(
    run_file: Annotated[Path, typer.Argument(help="The run file (YAML).")],
    out: Annotated[Path | None, typer.Option(
        help="The run folder. Default: runs/<run file name>.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a stopped run in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
    allow_failed_jobs: Annotated[bool, typer.Option(
        help="Parallel Training: exit 0 even when some jobs failed (they are still listed). "
        f"Default: exit {EXIT_FAILED_JOBS}.")] = False,
) -> None:
    """Train what a run file describes, against the from-scratch baseline."""
    from tlroutes.runner import run as run_file_

    out = out or Path("runs") / run_file.stem
    if resume:
        _check_failure_record(run_file, out)
    try:
        summary = run_file_(run_file, out, resume=resume, progress=not quiet)
    except BaseException as exc:
        _stopped(run_file, out, exc)
        raise  # _stopped re-raises deliberate errors with the advice; this is everything else
    if _is_main_process():
        console.print(summary_table([summary]))
        console.print(f"run folder: {out}  (summary.json, metrics.jsonl, checkpoints/)")
        failed = _failed_jobs(summary)
        if failed:
            err = Console(stderr=True, soft_wrap=True)
            label = "[yellow]warning:[/]" if allow_failed_jobs else "[bold red]error:[/]"
            err.print(f"{label} {len(failed)} Parallel Training job(s) failed "
                      "(the others finished; summary.json has every result):", highlight=False)
            for name, cause in failed.items():
                err.print(f"  - {escape(name)}: {escape(shorten(str(cause), 300))}",
                          highlight=False)
            if not allow_failed_jobs:
                raise typer.Exit(EXIT_FAILED_JOBS)


def _failed_jobs(summary: Summary) -> dict[str, str]:
    """Parallel Training's failed jobs by name (``seed s: name`` over several seeds) → cause."""
    failed = dict(summary.details.get("failed") or {})
    for one in summary.per_seed:
        failed.update({f"seed {one.seed}: {n}": c
                       for n, c in (one.details.get("failed") or {}).items()})
    return failed


def _stopped(run_file: Path, out: Path, exc: BaseException) -> None:
    """Say what stopped a run and what to do next; record it in the run folder.

    Refusals before the run starts (an invalid run file, a folder that holds another run) are
    ``ConfigError``s and other deliberate errors, printed as they are. A run that stopped while
    training leaves ``failed.json`` (the runner writes it: :mod:`tlroutes.runfolder.failure`).
    """
    if not _is_main_process():
        return
    started = (out / "run.yaml").is_file()
    if not (started and is_recorded(exc)):
        return
    kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
    if isinstance(exc, REPEATING_ERRORS):
        advice = (f"The run stopped; {out} keeps what finished (report: {out}/report.html). "
                  "Resuming with the same run file would stop the same way (a resume repeats "
                  "the run exactly): change the run file (or the data) and start it in a new "
                  "--out.")
        raise TLRoutesError(f"{exc}\n{advice}") from exc
    advice = (f"The run stopped; {out} keeps what finished (report: {out}/report.html). "
              f"Continue it with: tlroutes run {run_file} --out {out} --resume")
    if isinstance(exc, KeyboardInterrupt):
        Console(stderr=True, soft_wrap=True).print(f"interrupted. {escape(advice)}",
                                                   highlight=False)
        return
    traceback.print_exc()
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] the run stopped on an unexpected {escape(kind)}: "
        f"{escape(shorten(str(exc), 400))}\n{escape(advice)}", highlight=False)
    raise typer.Exit(1) from None


def _check_failure_record(run_file: Path, out: Path) -> None:
    """Refuse ``--resume`` of a run whose recorded failure a resume would only repeat."""
    record = read_failure(out)
    if record is None or record.resumable:
        return
    raise TLRoutesError(
        f"The run in {out} stopped on {shorten(record.error)}: "
        f"{shorten(record.message, 1000)}\nResuming it with the same run file would stop the "
        "same way (a resume repeats the run exactly), and a changed run file cannot resume this "
        "folder. Change the run file (or the data) and start it in a new --out. (Delete "
        f"{out / FAILURE_FILE} to resume anyway.)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's run folders.")] = Path(
        "runs/demo"),
    quick: Annotated[bool, typer.Option(
        help="A third of every example's epochs: a smoke test of all eight routes.")] = False,
    seeds: Annotated[int | None, typer.Option(
        min=1, max=100, help="Seeds per route (mean ± std), 1 to 100. Default: 3, or 1 with "
        "--quick.")] = None,
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


SEEDS_HELP = (f"Measurement seeds behind each domain verdict: --seed, --seed + 1, … "
              f"(majority rule: a verdict needs more than half of them; seeds stop once one "
              f"has it). The verdict's share over the seeds run is reported. 1 = a single "
              f"measurement. Default {VERDICT_SEEDS}.")


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
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the measurements.")
                    ] = 0,
    permutations: Annotated[int, typer.Option(
        min=1, max=MAX_PERMUTATIONS, help="Permutations of the MMD test.")] = 200,
    max_samples: Annotated[int, typer.Option(
        min=10, max=MAX_SAMPLES, help="Samples per side for the tests.")] = 2000,
    seeds: Annotated[int, typer.Option(min=1, max=MAX_VERDICT_SEEDS, help=SEEDS_HELP)
                     ] = VERDICT_SEEDS,
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
                        max_samples=max_samples, seeds=seeds)
    for table in evidence_tables(evidence):
        console.print(table)
    path = json_out or Path("runs/inspect") / f"{_slug(first, second)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, evidence.to_dict())
    console.print(f"evidence written to {path} ({evidence.seconds:.1f} s)")


@app.command()
def plan(
    run_file: Annotated[Path, typer.Argument(help="The run file (YAML); route: auto lets the "
                                             "plan choose.")],
    out: Annotated[Path | None, typer.Option(
        help="Folder for plan.json and cube.png. Default: runs/plan/<run file name>.")] = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED, help="Seed of the measurements. Default: the run file's.")] = None,
    permutations: Annotated[int, typer.Option(
        min=1, max=MAX_PERMUTATIONS, help="Permutations of the MMD test.")] = 200,
    max_samples: Annotated[int, typer.Option(
        min=10, max=MAX_SAMPLES, help="Samples per side for the tests.")] = 2000,
    seeds: Annotated[int, typer.Option(min=1, max=MAX_VERDICT_SEEDS, help=SEEDS_HELP)
                     ] = VERDICT_SEEDS,
) -> None:
    """Name the route for a run file from what it declares and what is measured in its data."""
    from tlroutes.cube_picture import draw_cube
    from tlroutes.planner import plan as plan_
    from tlroutes.planner import plan_tables
    from tlroutes.routes.explain import cube_table

    result = plan_(run_file, seed=seed, permutations=permutations, max_samples=max_samples,
                   seeds=seeds)
    console.print(cube_table(result.route, result.importance))
    for table in plan_tables(result):
        console.print(table)
    out = out or Path("runs/plan") / run_file.stem
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", result.to_dict())
    draw_cube(result.route, out / "cube.png", result.importance)
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


# Use what a run trained (tlroutes.cli_use): predict, export, manifest.
for _command in (predict, export, manifest):
    app.command()(_command)


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

    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; print usage and deliberate errors as one message and exit 2
    (see the module's docstring for every exit status)."""
    try:
        status = app(args=argv, standalone_mode=False)
    except TLRoutesError as exc:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(clip_message(str(exc)))}", highlight=False
        )
        sys.exit(2)
    except Exception as exc:
        code = _usage_error(exc)
        if code is None:
            raise
        sys.exit(code)
    # Without standalone mode, typer returns an Exit's status (e.g. 130 for Ctrl-C).
    if isinstance(status, int) and status:
        sys.exit(status)


def _usage_error(exc: Exception) -> int | None:
    """Print a command-line usage error as one line; its exit status, or None if it is none.

    typer raises its own (vendored) copy of click's exceptions, and a plugin may raise click's
    own: both are recognised by shape (``exit_code`` and ``format_message``), not by class.
    """
    if type(exc).__name__ == "NoArgsIsHelpError":  # `tlroutes` alone: the help, as click does
        print(exc.format_message())
        return 2
    format_message = getattr(exc, "format_message", None)
    exit_code = getattr(exc, "exit_code", None)
    if not (callable(format_message) and isinstance(exit_code, int)):
        if type(exc).__name__ == "Abort":
            return 130
        return None
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "tlroutes"
    text = " ".join(str(format_message()).split())  # one line
    hint = f" (see '{command} --help')" if ctx is not None else ""
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(shorten(text, 400))}{escape(hint)}", highlight=False)
    return exit_code


if __name__ == "__main__":
    main()
