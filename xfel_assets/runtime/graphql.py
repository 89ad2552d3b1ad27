"""Dagster's GraphQL API, as the web UI uses it: in this process against the code location, or at a web server's URL."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import dagster as dg


class GraphQL:
    """Dagster's GraphQL API, in this process (a workspace of our code location) or at a web server's URL."""

    def __init__(self, instance: dg.DagsterInstance, workspace_file: Path, url: str | None = None):
        self.instance, self.workspace_file, self.url = instance, workspace_file, url
        self._process_context = None

    def __enter__(self) -> GraphQL:
        if self.url is None:
            from dagster._core.workspace.context import WorkspaceProcessContext
            from dagster._core.workspace.load_target import WorkspaceFileTarget
            from dagster_graphql.schema import create_schema

            self._schema = create_schema()
            self._process_context = WorkspaceProcessContext(
                self.instance, in_process_target(self.workspace_file) or WorkspaceFileTarget(
                    paths=[str(self.workspace_file)]))
            self._process_context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._process_context is not None:
            self._process_context.__exit__(*exc)

    def __call__(self, query: str, variables: dict) -> dict:
        if self.url is None:
            from dagster._core.definitions.partitions.context import partition_loading_context

            # Ranges of dynamic (run) partitions need the instance to resolve their keys.
            with partition_loading_context(dynamic_partitions_store=self.instance):
                result = self._schema.execute(query, context_value=self._process_context.create_request_context(),
                                              variable_values=variables)
            errors, data = result.errors, result.data
        else:
            req = urllib.request.Request(self.url.rstrip("/") + "/graphql",
                                         data=json.dumps({"query": query, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = json.loads(resp.read())
            errors, data = body.get("errors"), body.get("data")
        if errors:
            raise RuntimeError(f"Dagster GraphQL error: {errors}")
        return data


def in_process_target(workspace_file: Path):
    """The workspace's Python modules loaded in this process, or None if it names anything else.

    A workspace file makes Dagster start a code server process (5 s to start, 8 s of CPU here) that
    only answers the launch and status queries; an asset backfill is not tied to the code
    location it was launched from (the daemon evaluates it against its own workspace).
    """
    import yaml
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    entries = (yaml.safe_load(workspace_file.read_text()) or {}).get("load_from") or []
    if not entries or any(set(e) != {"python_module"} or not isinstance(e["python_module"], dict)
                          or set(e["python_module"]) - {"module_name", "location_name"} for e in entries):
        return None
    return InProcessWorkspaceLoadTarget([InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=e["python_module"]["module_name"]),
        location_name=e["python_module"].get("location_name") or e["python_module"]["module_name"])
        for e in entries])
