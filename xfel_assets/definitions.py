"""The Dagster definitions of xfel-assets: loaded by `dagster dev` through workspace.yaml."""

import dagster as dg

from .assets import ALL_ASSETS
from .event_sensor import new_event_run_sensor
from .executor import make_executor
from .insitu_sensor import new_measurement_sensor
from .jobs import ALL_JOBS
from .resources import default_resources
from .sensors import new_run_sensor, source_change_sensor

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    sensors=[new_run_sensor, source_change_sensor, new_measurement_sensor, new_event_run_sensor],
    resources=default_resources(),
    executor=make_executor(),
)
