"""Installed packages' plugin modules: imported by their entry-point group, each once."""

from __future__ import annotations

import importlib.metadata
import logging

log = logging.getLogger(__name__)
_loaded: set[str] = set()


def load_plugins(group: str, kind: str) -> None:
    """Import the modules of the entry points of `group` (`[project.entry-points."<group>"]` in
    a package's pyproject), whose decorators register `kind`s (backbones, metrics), the first
    time it is asked for; one that fails to load is named in a warning, and the others still
    load."""
    if group in _loaded:
        return
    _loaded.add(group)
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            entry_point.load()
        except Exception as exc:
            log.warning(
                f"the {kind} plugin {entry_point.name} = {entry_point.value!r} (an {group} "
                f"entry point of an installed package) fails to load, and its {kind}s are "
                f"unknown: {type(exc).__name__}: {exc}"
            )
