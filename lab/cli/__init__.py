"""The ``lab`` command: errors print as one line (a traceback only with ``--debug``).

Start-up cost: the organism, calibration and steer commands import their implementation
(lab.organism, pandas, lab.calibration with matplotlib) when they run, not at the top of their
modules. Measured on the 2-core machine (CPU time of ``lab --help``, mean of 5 runs): 7.1 s with
those imports inside the commands, 8.6 s with every CLI import at the top (+1.5 s; matplotlib
through lab.calibration alone +0.6 s). Every other import is at the top.
"""

from __future__ import annotations

import sys

import click
import typer

from lab.cli import cache, calibrate, fetch, organism, pair, runs, steer
from lab.errors import LabError
from lab.runtime import configure_threads

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="lab",
    help="Steerlab: which components of a fine-tuned model stopped predicting and started "
    "steering?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: cores - 1)."),
) -> None:
    configure_threads(threads)


app.command("info")(pair.info)
app.command("demo")(runs.demo)
app.command("sweep")(runs.sweep)
app.command("report")(runs.report)
app.command("calibrate")(calibrate.calibrate)
app.command("cache")(cache.cache)
app.command("fetch")(fetch.fetch_command)
app.command("steer")(steer.steer)
app.add_typer(cache.store_app, name="store")
app.add_typer(organism.app, name="organism")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit status (for tests and scripts)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # Not standalone, typer returns the status of typer.Exit and of Ctrl-C (130): keep it.
        status = app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        return 130
    except Exception as e:
        if "--debug" in argv:
            raise
        if isinstance(e, LabError):
            print(f"error: {e}", file=sys.stderr)
        else:
            print(
                f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1
    return status if isinstance(status, int) else 0


def main() -> None:
    """The console script's entry point."""
    sys.exit(run())
