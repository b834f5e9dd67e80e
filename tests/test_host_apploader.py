"""App discovery through the ``suanpan.apps`` entry point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import node.apploader as apploader
from apps.membership import MembershipApp
from node.apploader import ENTRY_POINT_GROUP, AppLoadError, available_apps, load_apps


def test_membership_is_registered_and_loads() -> None:
    assert "membership" in available_apps()
    apps = load_apps(["membership"])
    assert len(apps) == 1
    assert isinstance(apps[0], MembershipApp)


def test_unknown_and_repeated_apps_are_clear_errors() -> None:
    with pytest.raises(AppLoadError, match=r"unknown app 'trade_finance'.*installed: .*membership"):
        load_apps(["membership", "trade_finance"])
    with pytest.raises(AppLoadError, match="more than once"):
        load_apps(["membership", "membership"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("apps.missing_module:App", "failed to load"),
        ("apps.base:AppError", "not an apps.base.App subclass"),
        ("apps.membership:MembershipApp", "calls itself 'membership'"),
    ],
)
def test_broken_entry_points_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    point = EntryPoint(name="broken", value=value, group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(apploader, "available_apps", lambda: {"broken": point})
    with pytest.raises(AppLoadError, match=message):
        load_apps(["broken"])
