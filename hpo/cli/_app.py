"""The ``hpo`` click group, the options commands share, and how errors and exits leave it."""

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
from hpo.cli._secrets import remember, scrub
from hpo.cli._target import not_found_hint

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


gpus_per_trial_option = click.option(
    "--gpus-per-trial",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="HPO_GPUS_PER_TRIAL",
    help="GPUs each trial gets (CUDA_VISIBLE_DEVICES, and {gpus} in a command, for "
    "torchrun --nproc-per-node {gpus}); with no GPU, the processes {gpus} tells a trial's "
    "command to start on the CPU.",
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
        remember(kwargs.get("storage"))
        sys.argv[1:] = [scrub(a, one_line=False) for a in sys.argv[1:]]
        try:
            _quiet_optuna()
            return fn(*args, **kwargs)
        except StudyNotFound as e:
            fail(f"{e}{not_found_hint()}", e.exit_code)
        except HpoError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
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
                fail(f"storage unreachable: {scrub(_db_reason(e))}", 1)
            if isinstance(e, sa.exc.DBAPIError):  # e.g. permission denied for a read-only role
                fail(f"storage error: {scrub(_db_reason(e))}", 1)
            kind = f"internal error ({type(e).__name__})"
            fail(f"{kind}: {scrub(str(e))} (set HPO_DEBUG=1 for a traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _db_reason(e: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's SQL echo and background link."""
    orig = getattr(e, "orig", None) or getattr(e, "__cause__", None) or e
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(e).__name__


def fail(message: str, code: int) -> None:
    click.echo(f"hpo: error: {scrub(message)}", err=True)
    sys.exit(code)


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


def exit_code(summary: Any, study: Any = None, state: Any = None) -> int:
    """The command's exit code; ``state`` is the study's summary ``print_summary`` read."""
    if summary.fatal:
        click.echo(f"hpo: error: {scrub(summary.fatal)}", err=True)
        return 1
    if summary.signal:  # interrupted: 130 for SIGINT, 143 for SIGTERM, as shells report it
        return 128 + int(summary.signal)
    if summary.ran and summary.complete + summary.pruned == 0 and summary.failed > summary.retried:
        return 1  # every trial this run finished failed (abandoned-and-retried ones aside)
    # A rerun of a study whose trials all failed runs none and must not look like success.
    spent = state is not None and summary.stop_reason == "budget spent"
    if spent and state.complete == 0 and state.failed > 0:
        click.echo(
            f"hpo: error: study {study.name!r} spent its budget without a completed trial "
            f"({state.failed} failed); `hpo delete` it, or raise budget.n_trials and --force",
            err=True,
        )
        return 1
    return 0


def exit_with(code: int, study: Any) -> None:
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


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    output.write_text(text)
    click.echo(f"wrote {output}", err=True)
