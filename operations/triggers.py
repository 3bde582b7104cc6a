"""
"Did an earlier operation change something?", asked from inside a later one.

Before execution (``--dry``, or change detection without ``-y``) an operation only
knows whether it *will* change; during execution it knows whether it *did*. A
restart or a health wait asks whichever applies, so ``--dry`` shows a restart
exactly when the run would do one.
"""

from __future__ import annotations


def changed(meta) -> bool:
    if meta.is_complete():
        return meta.did_change()
    return meta.will_change


def any_changed(metas) -> bool:
    return any(changed(meta) for meta in metas)


def failed(meta) -> bool:
    """Whether an operation run with ``_ignore_errors`` failed (known only once it ran)."""
    return meta.is_complete() and meta.did_error()
