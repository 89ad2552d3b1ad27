"""xfel_assets: the Dagster definitions of the xfel-assets platform (assets, partitions, sensors, jobs)."""
