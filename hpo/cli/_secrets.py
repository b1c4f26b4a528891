"""Storage passwords never leave the process: every URL the CLI is given is remembered here,
so any text it prints (errors included) can be scrubbed of its password."""

from __future__ import annotations

import os


def scrub(text: str, *, one_line: bool = True) -> str:
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


def remember(url: str | None) -> str | None:
    """Note ``url`` so its password is scrubbed from everything printed; returns it."""
    if url:
        _CLI_URLS.append(url)
    return url
