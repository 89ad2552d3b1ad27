"""Every private Dagster name xfel-assets imports, patches or reads exists as we use it (written for Dagster 1.13).

A Dagster upgrade that renames a module, changes a signature, or stops reading a module constant that we set
(so the patch would stop applying without a word) fails here at once, naming the name. A new private import
anywhere in our packages fails too until it is added to the contract below.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: (module, name): the parameters we call it with, in order (None: we use it without calling it with arguments).
NAMES: dict[tuple[str, str], list[str] | None] = {
    # the run launcher: Dagster's own run worker, forked from our forkserver
    ("dagster._cli.api", "_execute_run_command_body"): ["run_id", "instance", "write_stream_fn", "set_exit_code_on_failure"],
    ("dagster._core.launcher.base", "RunLauncher"): None,
    ("dagster._core.launcher.base", "LaunchRunContext"): ["dagster_run", "workspace"],
    ("dagster._core.launcher.base", "CheckRunHealthResult"): ["status", "msg", "transient", "run_worker_id"],
    ("dagster._core.launcher.base", "WorkerStatus"): None,
    ("dagster._serdes", "ConfigurableClass"): None,
    ("dagster._serdes.config_class", "ConfigurableClassData"): ["module_name", "class_name", "config_yaml"],
    # the executor: Dagster's multiprocess executor with our pools, or in process
    ("dagster._core.definitions.executor_definition", "MULTI_PROC_CONFIG"): None,
    ("dagster._core.definitions.executor_definition", "_core_multiprocess_executor_creation"): ["config"],
    ("dagster._core.definitions.executor_definition", "multiple_process_executor_requirements"): None,
    ("dagster._core.executor.base", "Executor"): None,
    ("dagster._core.executor.in_process", "InProcessExecutor"): ["retries", "step_dependency_config", "marker_to_close"],
    # GraphQL in process: the backfill and ROI commands launch backfills as the web UI does
    ("dagster_graphql.schema", "create_schema"): [],
    ("dagster._core.workspace.context", "WorkspaceProcessContext"): [
        "instance", "workspace_load_target", "version", "read_only", "grpc_server_registry", "code_server_log_level",
        "server_command"],
    ("dagster._core.workspace.load_target", "WorkspaceFileTarget"): None,
    ("dagster._core.workspace.load_target", "InProcessWorkspaceLoadTarget"): ["origin"],
    ("dagster._core.remote_origin", "InProcessCodeLocationOrigin"): [
        "loadable_target_origin", "container_image", "entry_point", "container_context", "location_name"],
    ("dagster._core.types.loadable_target_origin", "LoadableTargetOrigin"): None,
    ("dagster._core.definitions.partitions.context", "partition_loading_context"): [
        "effective_dt", "dynamic_partitions_store", "new_ctx"],
    # the patches (xfel_assets/runtime/dagster_patches.py)
    ("dagster._core.execution.plan.active", "ActiveExecution"): None,
    ("dagster._core.execution.plan.active", "ActiveExecution.get_steps_to_execute"): ["self", "limit"],
    ("dagster._core.execution.plan.instance_concurrency_context", "InstanceConcurrencyContext"): None,
    ("dagster._core.execution.plan.instance_concurrency_context",
     "InstanceConcurrencyContext.interval_to_next_pending_claim_check"): ["self"],
    ("dagster._core.execution.plan.instance_concurrency_context", "InstanceConcurrencyContext.has_pending_claims"): ["self"],
    ("dagster", "SensorEvaluationContext.instance"): None,
    ("dagster._daemon.controller", "DagsterDaemonController.check_workspace_freshness"): ["self", "last_workspace_update_time"],
    ("dagster._daemon.controller", "DEFAULT_DAEMON_INTERVAL_SECONDS"): None,
    ("dagster._daemon.daemon", "BackfillDaemon.core_loop"): ["self", "workspace_process_context", "shutdown_event"],
    ("dagster._daemon.backfill", "execute_backfill_iteration_loop"): [
        "workspace_process_context", "logger", "shutdown_event"],
    ("dagster._daemon.controller", "RELOAD_WORKSPACE_INTERVAL"): None,
    ("dagster._daemon.sensor", "MIN_INTERVAL_LOOP_TIME"): None,
    ("dagster._core.storage.schedules.sql_schedule_storage", "SqlScheduleStorage"): None,
    ("dagster._core.storage.schedules.sql_schedule_storage", "SqlScheduleStorage.has_instigators_table"): ["self"],
    ("dagster._core.storage.schedules.sql_schedule_storage", "SqlScheduleStorage.has_secondary_index_table"): ["self"],
    ("dagster._core.storage.schedules.sql_schedule_storage", "SqlScheduleStorage.has_built_index"): ["self", "migration_name"],
    ("dagster._core.storage.schedules.sql_schedule_storage", "SqlScheduleStorage._has_instigators_table"): ["self", "conn"],
    ("dagster._daemon.cli", "main"): None,
    # names the definitions and commands use (xfel_assets/runtime/dagster_names.py)
    ("dagster._core.definitions.assets.graph.asset_graph_subset", "AssetGraphSubset"): None,
    ("dagster._core.definitions.assets.graph.asset_graph_subset", "AssetGraphSubset.from_asset_partition_set"): [
        "asset_partitions_set", "asset_graph", "validate_time_range"],
    ("dagster._core.definitions.events", "AssetKeyPartitionKey"): ["asset_key", "partition_key"],
    ("dagster._core.definitions.data_version", "DATA_VERSION_TAG"): None,
    ("dagster._core.execution.backfill", "BulkActionStatus"): None,
    ("dagster._core.execution.backfill", "BulkActionsFilter"): None,
    ("dagster._core.storage.tags", "BACKFILL_ID_TAG"): None,
    ("dagster._core.storage.tags", "PARTITION_NAME_TAG"): None,
    ("dagster", "RunRequest.for_asset_graph_subset"): ["asset_graph_subset", "tags"],
    # the instance's concurrency storage (pools): set by the commands, freed for killed runs
    ("dagster._core.storage.event_log.base", "EventLogStorage.set_concurrency_slots"): ["self", "concurrency_key", "num"],
    ("dagster._core.storage.event_log.base", "EventLogStorage.free_concurrency_slots_for_run"): ["self", "run_id"],
    ("dagster._core.storage.event_log.base", "EventLogStorage.get_concurrency_info"): ["self", "concurrency_key"],
}

#: Attributes our patches read on Dagster's objects (set in their methods, so looked for in the class's source).
ATTRIBUTES: dict[tuple[str, str], list[str]] = {
    ("dagster._core.execution.plan.instance_concurrency_context", "InstanceConcurrencyContext"): [
        "_pending_claims", "_pending_timeouts"],
    ("dagster._core.execution.plan.active", "ActiveExecution"): ["_in_flight", "_instance_concurrency_context"],
    ("dagster", "SensorEvaluationContext"): ["_instance", "_instance_ref"],
}

#: Module constants we set: each must still be read, at call time, by the function whose behaviour it changes.
READ_BY: dict[tuple[str, str], tuple[str, str]] = {
    ("dagster._daemon.controller", "RELOAD_WORKSPACE_INTERVAL"): (
        "dagster._daemon.controller", "DagsterDaemonController.check_workspace_freshness"),
    ("dagster._daemon.controller", "DEFAULT_DAEMON_INTERVAL_SECONDS"): (
        "dagster._daemon.backfill", "execute_backfill_iteration_loop"),
    ("dagster._daemon.sensor", "MIN_INTERVAL_LOOP_TIME"): ("dagster._daemon.sensor", "execute_sensor_iteration_loop"),
}


def resolve(module: str, dotted: str):
    obj = importlib.import_module(module)
    for part in dotted.split("."):
        obj = getattr(obj, part)  # on a class: a method with self, a classmethod bound, a property itself
    return obj


@pytest.mark.parametrize("module, name", sorted(NAMES), ids=lambda x: x)
def test_each_private_name_exists_with_the_parameters_we_use(module, name):
    obj = resolve(module, name)
    expected = NAMES[(module, name)]
    if expected is not None:
        params = list(inspect.signature(obj).parameters)
        assert params[:len(expected)] == expected, f"{module}.{name}: parameters {params}, we use {expected}"


@pytest.mark.parametrize("module, cls", sorted(ATTRIBUTES), ids=lambda x: x)
def test_the_attributes_our_patches_read_are_still_set(module, cls):
    source = inspect.getsource(resolve(module, cls))
    for attr in ATTRIBUTES[(module, cls)]:
        assert f"self.{attr}" in source, f"{module}.{cls} no longer sets {attr}"


@pytest.mark.parametrize("constant", sorted(READ_BY), ids=lambda x: x[1])
def test_each_constant_we_set_is_read_where_it_changes_behaviour(constant):
    module, name = READ_BY[constant]
    assert isinstance(resolve(*constant), (int, float))
    assert constant[1] in inspect.getsource(resolve(module, name)), \
        f"{module}.{name} no longer reads {constant[1]}: setting it would change nothing"


def test_every_private_dagster_import_of_ours_is_in_the_contract():
    """An ast walk over xfel_assets and xfel_core: each `from dagster._x import y` (and dagster_graphql) is listed."""
    listed = {(m, n.split(".")[0]) for m, n in NAMES} | {(m, n) for m, n in ATTRIBUTES}
    listed_modules = {m for m, _ in NAMES}
    missing = []
    for path in [*REPO.glob("xfel_assets/**/*.py"), *REPO.glob("xfel_core/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("dagster._", "dagster_graphql")):
                missing += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                            if (node.module, a.name) not in listed]
            elif isinstance(node, ast.Import):
                missing += [f"{path.relative_to(REPO)}: {a.name}" for a in node.names
                            if a.name.startswith("dagster._") and a.name not in listed_modules]
    assert not missing, "private Dagster names not in tests/test_dagster_contract.py:\n" + "\n".join(missing)


def test_the_backfill_loop_uses_of_its_shutdown_event_only_what_our_wrapper_has():
    """The daemon patch hands the backfill loop a wrapper of its shutdown event (waking it when a run ends)."""
    from xfel_assets.runtime.dagster_patches import _WakeOnRunEnd

    source = inspect.getsource(resolve("dagster._daemon.backfill", "execute_backfill_iteration_loop"))
    used = set(re.findall(r"shutdown_event\.(\w+)", source))
    assert used and all(hasattr(_WakeOnRunEnd, name) for name in used), used
