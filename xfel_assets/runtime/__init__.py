"""How runs execute: the run launcher and its forkserver, the executor, the daemon and its control, SLURM, Dagster's GraphQL API.

The one place that uses Dagster's private API (``dagster._…``, ``dagster_graphql``): its patches in
:mod:`~xfel_assets.runtime.dagster_patches`, the private names the definitions need in
:mod:`~xfel_assets.runtime.dagster_names`.
"""
