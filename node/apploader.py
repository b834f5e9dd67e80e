"""Discover application plugins through the ``suanpan.apps`` entry point group.

A bank ships its own app as a package that declares, in its ``pyproject.toml``::

    [project.entry-points."suanpan.apps"]
    trade_finance = "bank_apps.trade:TradeFinanceApp"

Genesis names the apps a chain enables; ``load_apps`` instantiates exactly those, in name
order, and refuses an unknown name, an entry point that does not load, a class whose ``name``
differs from its entry point name (every node must agree on which code runs), or an app whose
read rules name queries or arguments its schema does not declare. ``app_classes`` loads every
installed app class for tools that describe them (the command line, the API description).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from apps.base import App
from apps.schema import read_rule_problems

__all__ = [
    "ENTRY_POINT_GROUP",
    "AppLoadError",
    "app_classes",
    "available_apps",
    "load_app_class",
    "load_apps",
]

ENTRY_POINT_GROUP: Final = "suanpan.apps"


class AppLoadError(Exception):
    """An app named by genesis cannot be loaded; the message names the app and the cause."""


def available_apps() -> dict[str, EntryPoint]:
    """Installed app entry points by name."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def load_app_class(name: str, point: EntryPoint) -> type[App]:
    """The app class behind entry point ``point``, checked; raises ``AppLoadError``."""
    try:
        loaded = point.load()
    except Exception as error:
        raise AppLoadError(
            f"app {name!r} ({point.value}) failed to load: {type(error).__name__}: {error}"
        ) from error
    if not (isinstance(loaded, type) and issubclass(loaded, App)):
        raise AppLoadError(f"app {name!r} ({point.value}) is not an apps.base.App subclass")
    if getattr(loaded, "name", None) != name:
        raise AppLoadError(
            f"app {name!r} ({point.value}) calls itself {getattr(loaded, 'name', None)!r}"
        )
    if loaded.schema is not None:
        problems = read_rule_problems(loaded.schema, loaded.read_rules)
        if problems:
            raise AppLoadError(f"app {name!r}: {'; '.join(problems)}")
    return loaded


def app_classes() -> dict[str, type[App] | AppLoadError]:
    """Every installed app class by name, in name order; an app that does not load maps to
    the error saying why (a broken plugin must not hide the others)."""
    classes: dict[str, type[App] | AppLoadError] = {}
    installed = available_apps()
    for name in sorted(installed):
        try:
            classes[name] = load_app_class(name, installed[name])
        except AppLoadError as error:
            classes[name] = error
    return classes


def load_apps(names: Iterable[str]) -> list[App]:
    """Instantiate the apps called ``names`` (sorted by name); raise ``AppLoadError``."""
    wanted = list(names)
    if len(set(wanted)) != len(wanted):
        raise AppLoadError(f"genesis enables an app more than once: {wanted}")
    installed = available_apps()
    apps: list[App] = []
    for name in sorted(wanted):
        point = installed.get(name)
        if point is None:
            raise AppLoadError(
                f"unknown app {name!r}: no {ENTRY_POINT_GROUP!r} entry point; "
                f"installed: {sorted(installed)}"
            )
        loaded = load_app_class(name, point)
        try:
            apps.append(loaded())
        except Exception as error:
            raise AppLoadError(f"app {name!r} could not be created: {error}") from error
    return apps
