"""The Dagster definitions built from the workflow model (xfel_core.lineage.model): assets and observed sources, partitions, jobs, sensors, resources."""
