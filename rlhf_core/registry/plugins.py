"""Plugins: modules outside the package that register entries of their own (a policy algorithm, a gold
preference, ...) when imported. `$RLHF_PLUGINS` names them, comma-separated; the CLI imports them before it
builds its choices, so every process it starts (`serve`'s worker too) sees the same tables."""

from __future__ import annotations

import importlib
import os

PLUGINS_ENV = "RLHF_PLUGINS"


class PluginError(ImportError):
    """A plugin named in $RLHF_PLUGINS could not be imported; the message names it."""


def load_plugins(names: str | None = None) -> list[str]:
    """Import every module named in `names` (default: $RLHF_PLUGINS); returns their names."""
    text = os.environ.get(PLUGINS_ENV, "") if names is None else names
    loaded = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"${PLUGINS_ENV} names {name!r}, which cannot be imported: {exc}") from exc
        loaded.append(name)
    return loaded
