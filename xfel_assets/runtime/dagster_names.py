"""The names we take from Dagster's private modules, in one place: a Dagster upgrade that moves one changes this file only."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

__all__ = ["BACKFILL_ID_TAG", "DATA_VERSION_TAG", "PARTITION_NAME_TAG", "BulkActionStatus", "BulkActionsFilter",
           "backfill_request", "unfinished_backfill_targets"]


def backfill_request(partitions: Iterable[tuple[str | dg.AssetKey, str]], asset_graph, tags: dict[str, str]) -> dg.RunRequest:
    """A sensor's run request for these (asset, partition key) pairs, which the daemon launches as one asset backfill."""
    keys = {AssetKeyPartitionKey(dg.AssetKey.from_coercible(a), k) for a, k in partitions}
    return dg.RunRequest.for_asset_graph_subset(AssetGraphSubset.from_asset_partition_set(keys, asset_graph), tags=tags)


def unfinished_backfill_targets(instance: dg.DagsterInstance) -> list[tuple[str, set[tuple[str, str]]]]:
    """(id, {(asset, partition key)}) of every unfinished asset backfill of the instance."""
    out = []
    for bf in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        data = bf.asset_backfill_data
        if data is None:
            continue
        subset = data.target_subset
        out.append((bf.backfill_id, {(key.to_user_string(), str(k)) for key in subset.asset_keys
                                     if key in subset.partitions_subsets_by_asset_key
                                     for k in subset.get_partitions_subset(key).get_partition_keys()}))
    return out
