"""The Dagster definitions of xfel-assets: loaded by `dagster dev` through workspace.yaml."""

import dagster as dg

from xfel_assets.defs.assets import ALL_ASSETS
from xfel_assets.defs.event_sensor import new_event_run_sensor
from xfel_assets.defs.insitu_sensor import new_measurement_sensor
from xfel_assets.defs.jobs import ALL_JOBS
from xfel_assets.defs.resources import default_resources
from xfel_assets.defs.sensors import new_run_sensor, refresh_sensors, source_change_sensor
from xfel_assets.runtime.executor import make_executor

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    sensors=[new_run_sensor, source_change_sensor, new_measurement_sensor, new_event_run_sensor, *refresh_sensors()],
    resources=default_resources(),
    executor=make_executor(),
)
