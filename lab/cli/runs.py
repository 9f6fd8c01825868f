"""``lab sweep``, ``lab report`` and ``lab demo``: run analyses, write the report, summarise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import typer

__all__ = ["demo", "report", "run_summary", "sweep"]


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
) -> None:
    """Run a sweep: every job not done yet, in dependency order; rerun after a crash to finish."""
    from lab.sweeps.sweep import load_config, run
    from lab.sweeps.sweep import plan as job_graph

    loaded = load_config(
        config, out=out, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
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
    from lab.report.build import build_report

    path, missing = build_report(run_dir, out)
    for note in missing:
        typer.echo(f"missing: {note}", err=True)
    typer.echo(f"report: {path}")
    if check:
        from lab.report.browser import check_page

        result = check_page(path, path.with_suffix(".png"))
        typer.echo(
            f"browser: {len(result.errors)} errors, {len(result.rendered_ids)}/"
            f"{len(result.circuitsvis_ids)} circuitsvis elements rendered, "
            f"{result.n_figures} figures; screenshot {result.screenshot}"
        )
        result.require_ok(path)  # a page that failed the check exits non-zero


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The headline of a run: top steering components with their scores, and what they carry."""
    from probes.components.migration import top_steering

    run_dir = Path(run_dir)
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    if (run_dir / "classify.parquet").exists():
        scores = pd.read_parquet(run_dir / "classify.parquet")
        top = top_steering(scores, n=5)
        out["top_steering"] = [
            {
                "component": r.component,
                "kl_share_removed": r.value,
                "ci": [r.lo, r.hi],
                "label": r.label,
            }
            for r in top.itertuples()
        ]
    if (run_dir / "joint.parquet").exists():
        joint = pd.read_parquet(run_dir / "joint.parquet")
        out["top5_joint"] = dict(zip(joint.metric, joint.value, strict=True))
        out["top5_joint"]["components"] = joint["components"].iloc[0]
    if (run_dir / "organism_eval.parquet").exists():
        ev = pd.read_parquet(run_dir / "organism_eval.parquet")
        keep = ev[ev.metric.isin(["wedding_reach", "ece", "excess_loss", "kl_to_pi_star"])]
        out["organism"] = {f"{r.model}.{r.metric}": r.value for r in keep.itertuples()}
    return out


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder (report.html, summary.json)."),
) -> None:
    """The main job on the shipped organism: every analysis, the report, a summary."""
    from lab.models.checkpoints import data_dir
    from lab.report.build import build_report
    from lab.sweeps.sweep import load_config, run

    config = load_config(data_dir() / "sweeps" / "organism.toml", out=out)
    run(config)
    path, _ = build_report(out)
    summary = run_summary(out)
    summary["report"] = str(path)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(
        "\nTop steering components (share of KL(tuned || base) removed by patching in "
        "the base activation, 90% CI):"
    )
    for c in summary.get("top_steering", []):
        typer.echo(
            f"  {c['component']:<8} {c['kl_share_removed']:6.1%}  "
            f"[{c['ci'][0]:6.1%}, {c['ci'][1]:6.1%}]  {c['label']}"
        )
    if "top5_joint" in summary:
        j = summary["top5_joint"]
        line = f"Together they remove {j['kl_share']:.0%} of KL(tuned || base)"
        if "reach_share" in j:
            line += f" and {j['reach_share']:.0%} of the excess wedding-reach rate"
        typer.echo(line + ".")
    typer.echo(f"report: {path}\nsummary: {Path(out) / 'summary.json'}")
