"""The names we take from Dagster's private modules, in one place: a Dagster upgrade that moves one changes this file only."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionStatus, BulkActionsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

__all__ = ["BACKFILL_ID_TAG", "DATA_VERSION_TAG", "PARTITION_NAME_TAG", "BulkActionStatus", "BulkActionsFilter",
           "backfill_request"]


def backfill_request(partitions: Iterable[tuple[str | dg.AssetKey, str]], asset_graph, tags: dict[str, str]) -> dg.RunRequest:
    """A sensor's run request for these (asset, partition key) pairs, which the daemon launches as one asset backfill."""
    keys = {AssetKeyPartitionKey(dg.AssetKey.from_coercible(a), k) for a, k in partitions}
    return dg.RunRequest.for_asset_graph_subset(AssetGraphSubset.from_asset_partition_set(keys, asset_graph), tags=tags)
