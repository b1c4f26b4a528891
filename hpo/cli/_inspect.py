"""Commands that read a study: status, best, list, export, retrain, report, dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hpo.cli._app import handle_errors, main, output_option, storage_option, write_output
from hpo.cli._target import target


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--watch", is_flag=True, help="Refresh until the study is finished (or Ctrl-C): rate, ETA."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes with --watch.",
)
@handle_errors
def status(study: str, storage: str | None, fmt: str, watch: bool, interval: float) -> None:
    """Show the study's counts (logical trials, attempts and their outcomes, as the README
    defines them), the best trial, running trials and the worker fleet.

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = target(study, storage)
    from hpo.cli import _console
    from hpo.study import load_study
    from hpo.study import status as study_status

    if watch:
        if fmt != "table":
            raise click.UsageError("--watch draws a table; it cannot be used with --format json")
        from hpo.reporting import watch as watch_study

        with _console.watching() as show:
            watch_study(load_study(study, storage), show, interval=interval)
        return
    st = study_status(load_study(study, storage))
    _console.print_status(st, fmt)


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@output_option
@handle_errors
def best(study: str, storage: str | None, fmt: str, output: Path | None) -> None:
    """Print the best trial's parameters (a document `fixed:` or `hpo retrain` can take).

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = target(study, storage)
    from hpo.cli import _console
    from hpo.study import best_params, load_study

    text = _console.dump(best_params(load_study(study, storage)), fmt)
    write_output(text, output)


@main.command(name="list")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@handle_errors
def list_cmd(storage: str | None, fmt: str) -> None:
    """List the studies in the storage."""
    from hpo.cli import _console
    from hpo.study import list_studies

    _console.print_list(list_studies(storage), fmt)


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@output_option
@handle_errors
def export(study: str, storage: str | None, fmt: str, output: Path | None) -> None:
    """Export every trial: params, values, state, duration, epochs and user attributes.

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = target(study, storage)
    from hpo.cli import _console
    from hpo.study import load_study, trial_rows

    rows = list(trial_rows(load_study(study, storage)))
    write_output(_console.export_text(rows, fmt), output)


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "--trial", "number", type=click.IntRange(min=0), help="A trial number [default: best]."
)
@click.option(
    "--params",
    "params_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML/JSON file with `params:` (as `hpo best` writes) to train instead.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory [default: runs/STUDY/trial-N].",
)
@click.option("--device", help="cuda, cuda:1, mps or cpu [default: the best available].")
@handle_errors
def retrain(
    study: str,
    storage: str | None,
    number: int | None,
    params_file: Path | None,
    out: Path | None,
    device: str | None,
) -> None:
    """Train the best (or a chosen) configuration to completion; save model and manifest.

    A --params file from `hpo best` names its trial: when its params are that trial's, the
    trial is reproduced with its own seed. STUDY is a study name or the path of the spec it
    was created from.
    """
    from hpo.cli import _console
    from hpo.study import load_study, retrain_trial

    if params_file is not None and number is not None:
        raise click.UsageError("give either --trial or --params")
    params, named = None, None
    if params_file is not None:  # a bad file is an error before anything is opened
        params, named = _read_params(params_file, study)
    study, storage = target(study, storage)
    loaded = load_study(study, storage)
    done = retrain_trial(
        loaded, number=number, params=params, named_trial=named, out_dir=out, device=device
    )
    _console.print_retrained(done, loaded.spec.objective)


def _read_params(path: Path, study: str) -> tuple[dict[str, Any], int | None]:
    """The file's ``params:``, and the trial it names when it is one of ``study``'s."""
    import yaml

    from hpo.cli import _console
    from hpo.errors import UsageError

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read params: {' '.join(str(e).split())}") from None
    params = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise UsageError(f"{path}: expected a mapping with a 'params:' mapping")
    trial = doc.get("trial")
    if not isinstance(trial, int) or isinstance(trial, bool):
        return params, None
    if doc.get("study", study) != study:
        _console.note(
            f"{path} names trial #{trial} of study {doc['study']!r}, not of {study!r}: "
            "its params train as a configuration of your own"
        )
        return params, None
    return params, trial


@main.command()
@click.argument("study")
@storage_option
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory [default: reports/STUDY].",
)
@handle_errors
def report(study: str, storage: str | None, out: Path | None) -> None:
    """Write an HTML report of STUDY (index.html, plots embedded and as PNG files beside it).

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = target(study, storage)
    from hpo.reporting import write_report
    from hpo.study import load_study

    path = write_report(load_study(study, storage), out or Path("reports") / study)
    click.echo(f"wrote {path}")


@main.command()
@storage_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="HPO_DASHBOARD_HOST",
    help="Interface to bind; 0.0.0.0 exposes the dashboard to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    envvar="HPO_DASHBOARD_PORT",
)
@handle_errors
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study storage (safe while workers write)."""
    from hpo.cli import _console
    from hpo.storage import mask, open_storage, resolve_url

    url = resolve_url(storage)
    rdb = open_storage(url)
    if host in ("0.0.0.0", "::", ""):
        _console.err.print(
            f"warning: binding {host or 'all interfaces'}: anyone who can reach this machine "
            "can read (and annotate) every study; prefer 127.0.0.1 and an SSH tunnel",
            markup=False,
        )
    _console.err.print(f"optuna-dashboard for {mask(url)} on http://{host}:{port}/", markup=False)
    import optuna_dashboard

    optuna_dashboard.run_server(rdb, host=host, port=port)
