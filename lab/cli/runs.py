"""``lab sweep``, ``lab report`` and ``lab demo``: run analyses, write the report, summarise."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lab.models.checkpoints import data_dir

__all__ = ["demo", "report", "sweep"]


def sweep(
    config: Path = typer.Argument(..., help="A sweep config (TOML); see data/sweeps/."),
    out: Path = typer.Option(None, help="Output folder (default: the config's [run] out)."),
    plan: bool = typer.Option(False, help="Print the job graph and what is done; run nothing."),
    allow_pickle: bool = typer.Option(
        False, help="Let pairs whose config table sets allow_pickle load pickle weights."
    ),
    trust_remote_code: bool = typer.Option(
        False, help="Let pairs whose config table sets trust_remote_code run their code."
    ),
    executor: str = typer.Option(
        None, help="Where jobs run: local, ray or slurm (default: the config's executor key)."
    ),
) -> None:
    """Run a sweep: every job not done yet, each once the jobs it reads are done, on the local,
    Ray or Slurm executor; rerun after a crash to finish."""
    # Start-up cost: lab.sweeps and lab.report (with probes) add about 2.1 s of CPU to the 6 s
    # every `lab` command takes to start, `lab --help` included; imported when a command runs.
    from lab.sweeps.sweep import load_config, run
    from lab.sweeps.sweep import plan as job_graph

    loaded = load_config(
        config,
        out=out,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        executor=executor,
    )
    if plan:
        typer.echo(job_graph(loaded))
        return
    folder = run(loaded)
    typer.echo(f"results in {folder}")


def report(
    run_dir: Path = typer.Argument(..., help="A run folder written by lab demo or lab sweep."),
    out: Path = typer.Option(None, help="Where to write the HTML (default RUN_DIR/report.html)."),
    check: bool = typer.Option(False, help="Open it in headless Chromium and check it renders."),
) -> None:
    """Write one self-contained HTML report of a run folder."""
    # Start-up cost, as in `sweep`: imported when the command runs.
    from lab.report import browser, page

    path, missing = page.build(run_dir, out)
    for note in missing:
        typer.echo(f"missing: {note}", err=True)
    typer.echo(f"report: {path}")
    if check:
        result = browser.check_page(path, path.with_suffix(".png"))
        typer.echo(
            f"browser: {len(result.errors)} errors, {len(result.rendered_ids)}/"
            f"{len(result.circuitsvis_ids)} circuitsvis elements rendered, "
            f"{result.n_figures} figures; screenshot {result.screenshot}"
        )
        result.require_ok(path)  # a page that failed the check exits non-zero


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder (report.html, summary.json)."),
) -> None:
    """The main job on the shipped organism: every analysis, the report, a summary."""
    # Start-up cost, as in `sweep`: imported when the command runs.
    from lab.report import RunDir, build, headline
    from lab.sweeps.sweep import load_config, run

    config = load_config(data_dir() / "sweeps" / "organism.toml", out=out)
    run(config)
    path, _ = build(out)
    found = headline(RunDir(out))
    summary = {"run_dir": str(out), **found.summary(), "report": str(path)}
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    for line in found.lines():
        typer.echo(line)
    typer.echo(f"report: {path}\nsummary: {Path(out) / 'summary.json'}")
