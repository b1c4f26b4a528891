"""Which study and storage a command means: the one storage rule, and did-you-mean."""

from __future__ import annotations

import os
from pathlib import Path

from hpo.cli._secrets import remember


def storage_for(storage: str | None, spec_storage: str | None) -> str:
    """The storage the one rule picks (hpo.storage.resolve_url), its password scrubbed."""
    from hpo.storage import resolve_url

    return remember(resolve_url(storage, spec_storage)) or ""


def storage_origin(storage: str | None, spec_storage: str | None, url: str) -> str:
    """Which storage a command uses and which step of the rule chose it, masked, for one line
    on stderr: a study written to a storage the user did not expect is a silent wrong turn
    (an exported HPO_STORAGE overriding the spec's ``storage:``, say)."""
    import click

    from hpo.storage import mask, remembered_url

    ctx = click.get_current_context(silent=True)
    from_env = ctx is not None and (
        ctx.get_parameter_source("storage") is click.core.ParameterSource.ENVIRONMENT
    )
    if storage is not None:
        origin = "from HPO_STORAGE" if from_env else "from --storage"
        if spec_storage and spec_storage != storage:
            origin += f", not the spec's storage: {mask(spec_storage)}"
    elif spec_storage:
        origin = "the spec's storage:"
    elif remembered_url() == url:
        origin = "remembered in ./.hpo/storage"
    else:
        origin = "the default"
    return f"{mask(url)} ({origin})"


def spec_path(study: str) -> Path | None:
    """STUDY as the path of a spec, or None when it is a study name.

    A name ending in .yaml or .yml is a spec's path even when no such file exists, so a
    mistyped path is said to be missing rather than looked up as a study's name.
    """
    path = Path(study)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml") or (suffix == ".json" and (path.is_file() or os.sep in study)):
        return path
    return None


def target(study: str, storage: str | None) -> tuple[str, str]:
    """STUDY as a study name or the path of its spec, and the storage the rule picks for it."""
    spec_storage = None
    path = spec_path(study)
    if path is not None:
        from hpo.spec import load_spec

        loaded = load_spec(path, check_objective=False)
        study, spec_storage = loaded.name, loaded.storage
    url = storage_for(storage, spec_storage)
    _TARGET[:] = [(study, url, storage is not None or spec_storage is not None)]
    return study, url


_TARGET: list[tuple[str, str, bool]] = []  # (name, url, whether the user chose the storage)


def not_found_hint() -> str:
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
