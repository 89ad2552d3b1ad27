"""The web UI path in a real browser: Debian's chromium driven by Playwright against `dagster-webserver`.

The module starts `xfel-assets ui` (web server and daemon, as `make ui`) on a small demo beamtime on a free loopback
port, materializes the demo once from the command line, and then, in the browser: the asset
graph shows every asset; binned_cube of one run is materialized from its page; the partitions
of preprocessed_module show run x module; a backfill of all partitions of scan_variable is
launched from the dialog and completes; the preview image of a materialization loads. A
screenshot of every step is saved under the folder printed at the start.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import xarray as xr

from xfel_assets.cli.home import ensure_dagster_home
from xfel_assets.runtime.daemon_control import stop_process_group
from xfel_core.config import load_beamtime
from xfel_core.demo.beamtime import write_demo_beamtime

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Chromium flags for a closed network (see the machine notes): no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_S = 180


def chromium() -> str:
    """Debian's chromium, installed with apt-get if it is not there yet."""
    path = shutil.which("chromium")
    if path:
        return path
    out = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                         capture_output=True, text=True, timeout=900)
    path = shutil.which("chromium")
    if not path:
        pytest.fail(f"could not install Debian's chromium (apt-get exit {out.returncode}):\n{out.stderr[-2000:]}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, beamtime config, Dagster home, screenshot folder): web server and daemon running."""
    root = tmp_path_factory.mktemp("e2e")
    shots = Path(os.environ.get("XFEL_E2E_SCREENSHOTS") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    sys.__stdout__.write(f"\ne2e screenshots: {shots}\n")
    # No in-situ sample: the browser tests look at the European XFEL assets only (the graph shows every asset anyway).
    config = write_demo_beamtime(root / "beamtime", runs=2, trains=12, frames=4, modules=2, module_shape=(32, 64),
                                 insitu=False, variables=False)  # the session definitions: no variables
    home = ensure_dagster_home(root / "home", max_runs=2)
    # Dagster's newsletter dialog off (the instance's `nux` setting), so that it never covers a menu under
    # test: under load it came up late, over the partition drop-down of the Materialize dialog.
    with open(home / "dagster.yaml", "a") as f:
        f.write("nux:\n  enabled: false\n")
    env = dict(os.environ, DAGSTER_HOME=str(home), XFEL_BEAMTIME=str(config))
    made = subprocess.run([str(BIN / "xfel-assets"), "materialize"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    port = free_port()
    logs = {"ui": open(root / "ui.log", "w")}
    # As `make ui` runs it: the web server and our daemon.
    procs = [subprocess.Popen([str(BIN / "xfel-assets"), "ui", "--beamtime", str(config), "--port", str(port)],
                              env=env, stdout=logs["ui"], stderr=subprocess.STDOUT, start_new_session=True)]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(base + "/server_info", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (root / "ui.log").read_text()[-3000:]
                assert procs[0].poll() is None, (root / "ui.log").read_text()[-3000:]
                time.sleep(1)
        yield base, load_beamtime(config), home, shots
    finally:
        for p in procs:
            stop_process_group(p)
        for f in logs.values():
            f.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        pg.set_default_timeout(60_000)
        # The newsletter dialog is off (server fixture); should it come all the same, it is dismissed
        # before the next action.
        pg.add_locator_handler(pg.get_by_text("Join the Dagster community"),
                               lambda: pg.get_by_role("button", name="Skip").click())
        yield pg
        browser.close()


def open_page(pg, server, path: str) -> None:
    pg.goto(server[0] + path, wait_until="networkidle")


def shot(pg, server, name: str) -> None:
    pg.screenshot(path=str(server[3] / f"{name}.png"))


def choose_from_menu(pg, server, button, item, tries: int = 6) -> None:
    """Open the menu and click the item; open it again if it did not show (the page re-rendered under it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        try:
            button.click(timeout=10_000)
            item.click(timeout=10_000)
            return
        except PlaywrightTimeout:
            pg.keyboard.press("Escape")
    shot(pg, server, "menu-not-shown")
    raise AssertionError(f"the menu item {item} did not show after {tries} clicks on {button}")


def wait_for(condition, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def test_asset_graph_shows_every_asset(server, page):
    from xfel_assets.definitions import defs

    open_page(page, server, "/asset-groups")
    # The graph's own settings button (a menu's target), not the app's user settings in the navigation.
    page.locator("button:has([aria-label=zoom_out])").first.wait_for()
    choose_from_menu(page, server, page.locator(".bp5-popover-target button:has([aria-label=settings])").first,
                     page.get_by_role("menuitem", name=re.compile("Expand all groups")))
    page.keyboard.press("Escape")
    for _ in range(4):  # zoom out until the whole graph is in view, its names still drawn
        page.locator("button:has([aria-label=zoom_out])").click()
    page.wait_for_timeout(1500)
    shot(page, server, "01-asset-graph")
    labels = [t.strip() for t in page.locator("[class*=AssetNode_assetName]").all_inner_texts()]

    def shown(key: str) -> bool:  # long names are shown middle-truncated: "attenuatio…series"
        for label in labels:
            head, dots, tail = label.partition("…")
            if label == key or (dots and key.startswith(head) and key.endswith(tail)):
                return True
        return False

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(keys) == 26  # 12 assets, 3 run tables, 11 observed sources (the notes among them)
    assert {k for k in keys if not shown(k)} == set()


def test_materialize_binned_cube_of_one_run_from_its_page(server, page):
    _, cfg, home, _ = server
    path = cfg.output_path("r0003", "binned_cube")
    before = path.stat().st_mtime_ns
    open_page(page, server, "/assets/binned_cube")
    page.locator("button:has-text('Materialize')").first.click()
    dialog = page.locator("[role=dialog]").first
    dialog.get_by_text("Select a partition or create one").first.click()
    search = page.get_by_placeholder("Filter partitions")
    search.fill("r0003")
    # The option in the drop-down under the filter box (the page may show "r0003" elsewhere too).
    search.locator("xpath=ancestor::*[.//span[text()='r0003']][1]//span[text()='r0003']").first.click()
    page.keyboard.press("Escape")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    shot(page, server, "02-materialize-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    dialog.wait_for(state="hidden")  # the run is launched (queued for the daemon)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        def materialized_twice() -> bool:
            events = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("binned_cube"), asset_partitions=["r0003"]), limit=5)
            return len(events.records) >= 2
        wait_for(materialized_twice, "the second materialization of binned_cube r0003")
    # What the UI shows for the partition: two materializations.
    open_page(page, server, "/assets/binned_cube?view=partitions&partition=r0003")
    page.get_by_text("View all historical events (2)").wait_for()
    shot(page, server, "03-binned-cube-materialized")
    assert path.stat().st_mtime_ns > before
    ds = xr.open_dataset(path, engine="h5netcdf")
    assert ds["mean"].dims == ("scan_variable", "frame_type", "module", "y", "x") and int(ds["count"].sum()) > 0


def test_partitions_of_preprocessed_module_show_run_by_module(server, page):
    open_page(page, server, "/assets/preprocessed_module?view=partitions")
    page.get_by_text("Materialized (4)").wait_for()
    for key in ("r0002", "r0003", "00", "01"):
        assert page.get_by_text(key, exact=True).count() >= 1
    shot(page, server, "04-preprocessed-module-partitions")


def test_backfill_of_all_partitions_from_the_dialog_completes(server, page):
    _, _, home, _ = server
    open_page(page, server, "/assets/scan_variable")
    page.locator("button:has-text('Materialize')").first.click()
    dialog = page.locator("[role=dialog]").first
    dialog.get_by_role("button", name="All", exact=True).click()
    shot(page, server, "05-backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="hidden")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        def backfill():
            found = instance.get_backfills()
            return found[0] if found else None
        wait_for(lambda: backfill() is not None, "the backfill to be created")
        wait_for(lambda: backfill().status.value.startswith("COMPLETED"), "the backfill to complete")
        assert backfill().status.value in ("COMPLETED", "COMPLETED_SUCCESS")
        backfill_id = backfill().backfill_id
    # The backfill's page in the UI: both partitions of scan_variable succeeded.
    open_page(page, server, f"/runs/b/{backfill_id}")
    page.get_by_text("100% completed").first.wait_for()
    page.get_by_text("Succeeded", exact=True).first.wait_for()
    shot(page, server, "06-backfill-completed")


def test_preview_image_of_a_materialization_loads(server, page):
    open_page(page, server, "/assets/binned_cube")
    # The latest materialization's metadata: the markdown entry with the image opens on a click.
    row = page.get_by_text("pump_probe", exact=True).first.locator("xpath=ancestor::tr")
    row.get_by_text("Show Markdown").click()
    img = page.locator("img[src^='data:image/png']").first
    img.wait_for()
    img.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=img.element_handle())
    shot(page, server, "07-preview-image")
