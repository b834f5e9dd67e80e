"""A node exports its store's disk at every scrape: the data file's size and the free and total
bytes of the filesystem that holds it, as the system reports them at that moment, so the
shipped alerts (``SuanpanDiskFilling``, ``SuanpanDiskNearlyFull``) can fire before a full disk
stops the node. What cannot be read (a store directory that is gone) is left out of the
scrape, which goes on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import NodeMetrics
from node.monitoring.dashboards import alert_rules

FILE_BYTES = 3 * 4096 + 17
DISK_FIGURES = {
    "suanpan_store_file_bytes",
    "suanpan_store_disk_free_bytes",
    "suanpan_store_disk_size_bytes",
}


def scrape(metrics: NodeMetrics) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_the_store_disk_is_read_at_each_scrape(tmp_path: Path) -> None:
    store = tmp_path / "data"
    store.mkdir()
    (store / "data.mdb").write_bytes(bytes(FILE_BYTES))
    metrics = NodeMetrics()
    metrics.watch_store_disk(store)
    before = os.statvfs(store)
    values = scrape(metrics)
    after = os.statvfs(store)
    assert values["suanpan_store_file_bytes"] == FILE_BYTES
    assert values["suanpan_store_disk_size_bytes"] == before.f_blocks * before.f_frsize
    free = sorted(disk.f_bavail * disk.f_frsize for disk in (before, after))
    assert free[0] <= values["suanpan_store_disk_free_bytes"] <= free[1]
    # The file grows: the next scrape says so.
    with (store / "data.mdb").open("ab") as handle:
        handle.write(bytes(4096))
    assert scrape(metrics)["suanpan_store_file_bytes"] == FILE_BYTES + 4096


def test_a_store_directory_that_is_gone_leaves_its_figures_out(tmp_path: Path) -> None:
    store = tmp_path / "data"
    store.mkdir()
    metrics = NodeMetrics()
    metrics.watch_store_disk(store)
    values = scrape(metrics)
    assert "suanpan_store_file_bytes" not in values  # no data file yet
    assert "suanpan_store_disk_free_bytes" in values
    shutil.rmtree(store)
    values = scrape(metrics)
    assert not set(values) & DISK_FIGURES
    assert "suanpan_height" in values  # the rest of the scrape goes on


def test_the_disk_alerts_name_the_exported_figures() -> None:
    document = json.loads(json.dumps(alert_rules()))  # as a client reads it
    rules = {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}
    assert rules["SuanpanDiskNearlyFull"] == "suanpan_store_disk_free_bytes < 1073741824"
    assert (
        "suanpan_store_disk_free_bytes / suanpan_store_disk_size_bytes"
        in (rules["SuanpanDiskFilling"])
    )
