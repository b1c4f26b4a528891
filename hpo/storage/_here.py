"""The storage a working directory remembers, so commands after `hpo create` find the study.

``hpo create`` and ``hpo run`` write the storage URL they used to ``.hpo/storage`` in the
working directory; a later command there that is given neither ``--storage``, ``HPO_STORAGE``
nor a spec uses it. A URL with a password is never written (the file would keep a secret on
disk, where backups and ``git add .`` find it): then nothing is remembered and the command
says to set ``HPO_STORAGE`` instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: Relative to the working directory, like a relative SQLite path in the URL it holds.
HERE_FILE = Path(".hpo") / "storage"
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token")


def remembered_url() -> str | None:
    """The URL ``.hpo/storage`` in the working directory holds, if any."""
    try:
        text = HERE_FILE.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def has_secret(url: str) -> bool:
    """Whether ``url`` carries a password (in its authority or its query), or cannot be read."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return True  # unparsable: it may still hold one
    keys = {k.lower() for k in parsed.query}
    return parsed.password is not None or any(k in keys for k in _SECRET_QUERY_KEYS)


def remember_url(url: str) -> bool:
    """Write ``url`` to ``.hpo/storage``; False (and a stale file removed) if it has a secret.

    Best effort: a read-only working directory only means the next command needs the URL.
    """
    if has_secret(url):
        with contextlib.suppress(OSError):
            HERE_FILE.unlink(missing_ok=True)  # else a stale URL would silently win
        return False
    if remembered_url() == url:
        return True
    with contextlib.suppress(OSError):
        HERE_FILE.parent.mkdir(exist_ok=True)
        tmp = HERE_FILE.with_name(f".storage.{os.getpid()}.tmp")
        tmp.write_text(url + "\n", encoding="utf-8")
        os.replace(tmp, HERE_FILE)
        gitignore = HERE_FILE.parent / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n", encoding="utf-8")  # not for a repository
    return True
