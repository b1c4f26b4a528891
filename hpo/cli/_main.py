"""The ``hpo`` command: a thin layer over the library; output formatting lives in _console."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hpo import __version__

F = TypeVar("F", bound=Callable[..., Any])

checkpoint_option = click.option(
    "--checkpoint-dir",
    envvar="HPO_CHECKPOINT_DIR",
    metavar="DIR",
    help="Checkpoint root, overriding the spec's (env HPO_CHECKPOINT_DIR); on several "
    "machines, a directory they all share.",
)
gpus_option = click.option(
    "--gpus",
    metavar="IDS",
    envvar="HPO_GPUS",
    help="Comma-separated GPU indices, or 'all' / 'none' [default: all visible].",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    envvar="HPO_THREADS",
    help="CPU threads per trial process (env HPO_THREADS) [default: OMP_NUM_THREADS or "
    "MKL_NUM_THREADS when set, else this host's cores shared among the slots of every hpo "
    "worker running on it].",
)
storage_option = click.option(
    "--storage",
    envvar="HPO_STORAGE",
    metavar="URL",
    help="Study storage URL. The first of: --storage, env HPO_STORAGE, the spec's `storage:` "
    "(when given a spec), the URL `hpo create`/`run` remembered in ./.hpo/storage (never one "
    "with a password), sqlite:///hpo.db.",
)


def handle_errors(fn: F) -> F:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hpo.errors import HpoError, StudyNotFound

        # Known before anything can fail, so every message can be scrubbed of its password;
        # and no record of the command line (a retrain manifest, say) carries it.
        _remember(kwargs.get("storage"))
        sys.argv[1:] = [_scrub(a, one_line=False) for a in sys.argv[1:]]
        try:
            _quiet_optuna()
            return fn(*args, **kwargs)
        except StudyNotFound as e:
            _fail(f"{e}{_not_found_hint()}", e.exit_code)
        except HpoError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:  # last resort: one line, with the secret scrubbed
            if os.environ.get("HPO_DEBUG"):
                raise
            import sqlalchemy as sa

            from hpo.storage import is_transient

            if is_transient(e):
                _fail(f"storage unreachable: {_scrub(_db_reason(e))}", 1)
            if isinstance(e, sa.exc.DBAPIError):  # e.g. permission denied for a read-only role
                _fail(f"storage error: {_scrub(_db_reason(e))}", 1)
            kind = f"internal error ({type(e).__name__})"
            _fail(f"{kind}: {_scrub(str(e))} (set HPO_DEBUG=1 for a traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _db_reason(e: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's SQL echo and background link."""
    orig = getattr(e, "orig", None) or getattr(e, "__cause__", None) or e
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(e).__name__


def _fail(message: str, code: int) -> None:
    click.echo(f"hpo: error: {_scrub(message)}", err=True)
    sys.exit(code)


def _scrub(text: str, *, one_line: bool = True) -> str:
    """Remove any password of a storage URL the process knows about from ``text``."""
    import re

    if one_line:
        text = " ".join(text.split())
    # scheme://user:password@host -> scheme://user:***@host, whatever the URL
    text = re.sub(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    for url in filter(None, [os.environ.get("HPO_STORAGE"), *_CLI_URLS]):
        try:
            from sqlalchemy.engine import make_url

            pw = make_url(url).password
        except Exception:
            pw = None
        if pw and len(pw) >= 8:
            text = text.replace(pw, "***")
        elif pw:  # a short one only as a whole word, or "r" would mask every "r" in the text
            text = re.sub(rf"(?<!\w){re.escape(pw)}(?!\w)", "***", text)
    return text[:2000] if one_line else text


_CLI_URLS: list[str] = []


def _remember(url: str | None) -> str | None:
    if url:
        _CLI_URLS.append(url)
    return url


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hpo")
@click.option(
    "-v", "--verbose", count=True, help="Log each trial (-v) and Optuna's messages (-vv)."
)
def main(verbose: int) -> None:
    """Hyperparameter optimization for PyTorch training on Optuna.

    Describe a study in YAML, run it with `hpo run SPEC`, join it from other machines with
    `hpo worker STUDY`, and watch it with `hpo status` or `hpo dashboard`.
    """
    global _VERBOSE
    _VERBOSE = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


_VERBOSE = 0


def _quiet_optuna() -> None:
    """Optuna logs every trial at INFO; hpo has its own progress output unless -vv."""
    import optuna

    optuna.logging.set_verbosity(logging.INFO if _VERBOSE > 1 else logging.WARNING)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    envvar="HPO_WORKERS",
    help="Local trial processes.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop starting trials after this long (default: the spec's budget.timeout).",
)
@click.option("--force", is_flag=True, help="Replace a stored spec that differs from SPEC.")
@checkpoint_option
@gpus_option
@threads_option
@handle_errors
def run(
    spec: Path,
    storage: str | None,
    workers: int,
    timeout: float | None,
    force: bool,
    checkpoint_dir: str | None,
    gpus: str | None,
    threads: int | None,
) -> None:
    """Create or resume the study in SPEC and run it until its budget is spent.

    Exit codes: 0 done, 1 failed (every trial failed, storage unreachable), 2 usage or spec
    error, 130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM. The first signal finishes
    the running trials, a second abandons them for a retry; the code is the same.
    """
    from hpo.cli import _console
    from hpo.spec import load_spec
    from hpo.worker import run as run_study

    loaded = load_spec(spec)
    url = _storage_for(storage, loaded.storage)
    if loaded.n_trials is None and (timeout or loaded.budget.timeout) is None:
        _console.err.print(
            f"{loaded.name}: the spec has no budget.n_trials or budget.timeout: running until "
            f"stopped (Ctrl-C, or `hpo stop {loaded.name}`)",
            markup=False,
        )
    with _console.progress(loaded.name) as on_progress:
        study, summary = run_study(
            loaded,
            storage=url,
            workers=workers,
            gpus=_parse_gpus(gpus, None),
            force=force,
            timeout=timeout,
            checkpoint_dir=checkpoint_dir,
            threads=threads,
            on_progress=_remembering(url, storage, on_progress),
        )
    _console.print_summary(study, summary)
    _exit(_exit_code(summary), study)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@storage_option
@click.option("--force", is_flag=True, help="Replace a stored spec that differs from SPEC.")
@handle_errors
def create(spec: Path, storage: str | None, force: bool) -> None:
    """Create the study in SPEC (or check it matches the stored one), without running it."""
    from hpo.spec import load_spec
    from hpo.study import create_study

    loaded = load_spec(spec)
    study = create_study(loaded, _storage_for(storage, loaded.storage), force=force)
    note = _remember_here(study.url, storage)
    click.echo(f"study {study.name!r} ready in {study.masked_url}{note}")


@main.command()
@click.argument("study", envvar="HPO_STUDY")
@storage_option
@checkpoint_option
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(1, 256),
    default=None,
    envvar="HPO_PROCESSES",
    help="CPU trial processes when no GPU is used [default: 1].",
)
@gpus_option
@click.option(
    "--per-gpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="HPO_PER_GPU",
    help="Trial processes packed onto each GPU.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop starting trials after this long.",
)
@threads_option
@handle_errors
def worker(
    study: str,
    storage: str | None,
    processes: int | None,
    gpus: str | None,
    per_gpu: int,
    timeout: float | None,
    checkpoint_dir: str | None,
    threads: int | None,
) -> None:
    """Join STUDY (env HPO_STUDY) from this machine: one trial process per GPU slot.

    STUDY is a study name or the path of the spec it was created from.

    Exit codes: 0 done, 1 failed (every trial failed, storage unreachable), 2 usage or spec
    error, 130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM. The first signal finishes
    the running trials, a second abandons them for a retry; the code is the same.
    """
    from hpo.cli import _console
    from hpo.worker import join

    study, storage = _target(study, storage)
    gpu_ids = _parse_gpus(gpus, processes)
    if not gpu_ids and gpus in (None, "all") and processes is None:
        _console.err.print("no GPU visible: running 1 CPU trial process (see --processes)")
    with _console.progress(study) as on_progress:
        loaded, summary = join(
            study,
            storage=_remember(storage),
            processes=processes or 1,
            gpus=gpu_ids,
            per_gpu=per_gpu,
            timeout=timeout,
            checkpoint_dir=checkpoint_dir,
            threads=threads,
            on_progress=on_progress,
        )
    _console.print_summary(loaded, summary)
    _exit(_exit_code(summary), loaded)


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
    study, storage = _target(study, storage)
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
    study, storage = _target(study, storage)
    from hpo.cli import _console
    from hpo.study import best_params, load_study

    text = _console.dump(best_params(load_study(study, storage)), fmt)
    _write(text, output)


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
    study, storage = _target(study, storage)
    from hpo.cli import _console
    from hpo.study import load_study, trial_rows

    rows = list(trial_rows(load_study(study, storage)))
    _write(_console.export_text(rows, fmt), output)


@main.command()
@click.argument("study")
@storage_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@checkpoint_option
@handle_errors
def delete(study: str, storage: str | None, yes: bool, checkpoint_dir: str | None) -> None:
    """Delete STUDY and all its trials from the storage, and its checkpoints on this machine.

    STUDY is a study name or the path of the spec it was created from. Checkpoints are
    removed only where this machine sees them (the spec's checkpoint_dir, or
    --checkpoint-dir); other machines' local checkpoint directories are left alone.
    """
    study, storage = _target(study, storage)
    from hpo.errors import UsageError
    from hpo.study import delete_study

    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without --yes when not run interactively")
        click.confirm(f"Delete study {study!r} and all its trials?", abort=True)
    deleted = delete_study(study, storage, checkpoint_dir=checkpoint_dir)
    click.echo(f"deleted study {study!r}; {deleted.note}")


@main.command()
@click.argument("study")
@storage_option
@click.option("--now", is_flag=True, help="Abandon running trials (they are retried later).")
@handle_errors
def stop(study: str, storage: str | None, now: bool) -> None:
    """Ask every worker of STUDY, on every machine, to finish its trial and exit.

    STUDY is a study name or the path of the spec it was created from.
    """
    study, storage = _target(study, storage)
    from hpo.study import request_stop

    request_stop(study, _remember(storage), now=now)
    what = "abandon their trials" if now else "finish their current trials"
    click.echo(f"asked the workers of {study!r} to {what} and exit")


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
    study, storage = _target(study, storage)
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
    study, storage = _target(study, storage)
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


def _storage_for(storage: str | None, spec_storage: str | None) -> str:
    """The storage the one rule picks (hpo.storage.resolve_url), its password scrubbed."""
    from hpo.storage import resolve_url

    return _remember(resolve_url(storage, spec_storage)) or ""


def _target(study: str, storage: str | None) -> tuple[str, str]:
    """STUDY as a study name or the path of its spec, and the storage the rule picks for it."""
    spec_storage = None
    path = Path(study)
    if path.suffix.lower() in (".yaml", ".yml", ".json") and (path.is_file() or os.sep in study):
        from hpo.spec import load_spec

        loaded = load_spec(path, check_objective=False)
        study, spec_storage = loaded.name, loaded.storage
    url = _storage_for(storage, spec_storage)
    _TARGET[:] = [(study, url, storage is not None or spec_storage is not None)]
    return study, url


_TARGET: list[tuple[str, str, bool]] = []  # (name, url, whether the user chose the storage)


def _not_found_hint() -> str:
    """For "no study named ...": the close name, or what the storage holds, or how to choose."""
    import difflib

    from hpo.storage import HERE_FILE

    if not _TARGET:
        return ""
    name, url, chosen = _TARGET[0]
    try:
        from hpo.study import list_studies

        names = [s["name"] for s in list_studies(url)]
    except Exception:  # a missing SQLite file, say: it holds nothing
        names = []
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    held = f" (it holds: {', '.join(names[:8])})" if names else ""
    if chosen or os.environ.get("HPO_STORAGE") or HERE_FILE.exists():
        return held
    return (
        f"{held}; give --storage, HPO_STORAGE or the spec's path, or run this where "
        "`hpo create` ran"
    )


def _remember_here(url: str, storage: str | None) -> str:
    """Remember ``url`` in ./.hpo/storage for the commands that follow; what to tell the user."""
    from hpo.storage import remember_url

    if remember_url(url):
        return ""
    if storage is not None and storage == os.environ.get("HPO_STORAGE"):
        return ""  # it came from HPO_STORAGE, which the next commands have too
    return " (a URL with a password is not remembered: set HPO_STORAGE for the commands after)"


def _remembering(
    url: str, storage: str | None, on_progress: Callable[[Any], None]
) -> Callable[[Any], None]:
    """``on_progress`` that first remembers ``url``: the first report means the study exists,
    so a run that fails before (a bad storage) writes nothing."""
    done: list[bool] = []

    def update(progress: Any) -> None:
        if not done:
            done.append(True)
            note = _remember_here(url, storage)
            if note:
                click.echo(f"hpo: note: {note.strip(' ()')}", err=True)
        on_progress(progress)

    return update


def _parse_gpus(gpus: str | None, processes: int | None) -> list[str]:
    from hpo.errors import UsageError

    if gpus is None:
        if processes is not None:
            return []  # asking for CPU processes means CPU
        gpus = "all"
    gpus = gpus.strip().lower()
    if gpus == "none":
        return []
    if gpus == "all":
        return _visible_gpus()
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise UsageError(f"--gpus must be 'all', 'none' or indices like 0,1,3 (got {gpus!r})")
    return ids


def _visible_gpus() -> list[str]:
    """GPUs visible to this process, counted without initialising CUDA in the worker."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def _exit_code(summary: Any) -> int:
    if summary.fatal:
        click.echo(f"hpo: error: {_scrub(summary.fatal)}", err=True)
        return 1
    if summary.signal:  # interrupted: 130 for SIGINT, 143 for SIGTERM, as shells report it
        return 128 + int(summary.signal)
    if summary.ran and summary.complete + summary.pruned == 0 and summary.failed > summary.retried:
        return 1  # every trial this run finished failed (abandoned-and-retried ones aside)
    return 0


def _exit(code: int, study: Any) -> None:
    """End a run: everything is written, so as the ``hpo`` command skip the interpreter's
    teardown of Optuna, SQLAlchemy and torch (0.1-0.3 s, paid by every worker and every
    short run); called in-process, exit normally."""
    if not _FAST_EXIT:
        sys.exit(code)
    study.budget.engine.dispose()  # close the connections politely, not by a reset
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_FAST_EXIT = False


def entry() -> None:
    """The ``hpo`` command (``main`` is the click group, for callers in-process)."""
    global _FAST_EXIT
    _FAST_EXIT = True
    main()


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    output.write_text(text)
    click.echo(f"wrote {output}", err=True)


if __name__ == "__main__":
    entry()
