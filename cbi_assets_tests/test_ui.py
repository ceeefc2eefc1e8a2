"""The web UI end to end: `dagster dev` on 127.0.0.1 driven by headless Chromium (Debian's `chromium`).

It checks what a person relies on in the UI: every asset group (layer) in the asset graph, each market's horizon
partitions and nothing else, and a materialization launched from an asset's page that succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cbi_assets import lake as tables
from cbi_assets.lake import Lake

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a headless browser on a machine without a display, a GPU or the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 150
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _graphql(base: str, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` on a free port of 127.0.0.1, with its own instance and the product's folders under tmp_path.
    Yields (base url, lake folder); the whole process group is ended afterwards."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No usage statistics from a test.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBI_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        CBI_LAKE=str(lake),
        CBI_MODELS=str(tmp_path / "models"),
        CBI_WAREHOUSE=str(tmp_path / "warehouse.duckdb"),
        CBI_SOURCE="sample",
        CBI_SAMPLE_END="2026-10-30",
    )
    port = _free_port()
    log = tmp_path / "dagster_dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-m", "cbi_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited with {process.returncode} before serving:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not answer on {base} within {SERVER_START_S} s:\n{_tail(log)}")
            time.sleep(2)
        yield base, lake
    finally:
        # SIGTERM lets dagster dev stop its webserver, daemon and code servers; SIGKILL ends whatever is left.
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _expected_groups() -> set[str]:
    from cbi_assets.definitions import defs

    return {spec.group_name for spec in defs.resolve_all_asset_specs()}


def _innermost(page, *parts):
    """The innermost element that holds every locator in `parts`: a panel found by what it shows, not by its CSS."""
    locator = page.locator("div")
    for part in parts:
        locator = locator.filter(has=part)
    return locator.last


def _lines(locator) -> list[str]:
    """The distinct text lines of an element, in order (the UI renders each label twice: shown and measured)."""
    return list(dict.fromkeys(line.strip() for line in locator.inner_text().splitlines() if line.strip()))


def _partition_names(page, base: str, key: str, first: str) -> tuple[int, list[str]]:
    """What the asset's Partitions tab shows: the count it states and the partitions it lists."""
    from playwright.sync_api import expect

    page.goto(f"{base}/assets/{key}?view=partitions")
    expect(page.get_by_text(first, exact=True).first).to_be_visible()
    stated = page.get_by_text(re.compile(r"^\d+ Partitions Selected$"))
    expect(stated).to_be_visible()
    panel = _innermost(
        page, page.get_by_placeholder(re.compile("^Filter by name")), page.get_by_text(first, exact=True)
    )
    return int(stated.inner_text().split()[0]), _lines(panel)


def _keep_screenshots(shots: Path) -> None:
    """Copy the screenshots to CBI_UI_SCREENSHOTS, when set, for a person to look at."""
    if os.environ.get("CBI_UI_SCREENSHOTS"):
        target = Path(os.environ["CBI_UI_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, target / f"ui_{png.name}")


def test_web_ui_shows_layers_partitions_and_runs_a_materialization(dagster_dev, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from cbi_assets.catalogue import MARKETS

    base, lake = dagster_dev
    groups = _expected_groups()
    assert {"regimes", "zl_training", "mes_training"} <= groups
    horizons = {m: [h.name for h in MARKETS[m].horizons] for m in ("ZL", "MES")}
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # A loaded machine renders slowly: every UI assertion waits up to a minute.
    expect.set_options(timeout=UI_TIMEOUT_MS)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            # The first visit shows a newsletter dialog over the page; dismiss it whenever it appears.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click())

            # The global asset graph lists every group of the code location (the layers) beside the graph.
            page.goto(f"{base}/asset-groups")
            some_group = sorted(groups)[0]
            page.get_by_text(some_group, exact=True).first.wait_for()
            sidebar = _innermost(
                page, page.get_by_placeholder(re.compile("^Jump to")), page.get_by_text(some_group, exact=True)
            )
            assert set(_lines(sidebar)) == groups
            for group in groups:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=shots / "graph.png", full_page=True)

            # Horizon partitions: exactly each market's own horizons (no ZL 1min, no MES 1w).
            count, zl = _partition_names(page, base, "zl/training/labels", horizons["ZL"][0])
            page.screenshot(path=shots / "zl_partitions.png")
            assert (count, sorted(zl)) == (len(horizons["ZL"]), sorted(horizons["ZL"])) and "1min" not in zl
            count, mes = _partition_names(page, base, "mes/training/labels", horizons["MES"][0])
            page.screenshot(path=shots / "mes_partitions.png")
            assert (count, sorted(mes)) == (len(horizons["MES"]), sorted(horizons["MES"])) and "1w" not in mes

            # Materialize the regime calendar from its page, follow the run and wait for its success.
            page.goto(f"{base}/assets/shared/regimes/calendar")
            page.get_by_role("button", name=re.compile(r"Materialize$")).click()
            expect(page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))).to_be_visible()
            page.get_by_role("link", name="View", exact=True).click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(page.get_by_text("Failure", exact=True)).to_have_count(0)
            page.screenshot(path=shots / "run.png")
        except Exception:
            # What the browser showed when a step failed, for the person reading the failure.
            page.screenshot(path=shots / "failure.png", full_page=True)
            _keep_screenshots(shots)
            raise
        finally:
            browser.close()

    run = _graphql(
        base,
        "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status assetSelection { path } } } }",
        {"id": run_id},
    )["runOrError"]
    assert run == {
        "__typename": "Run",
        "status": "SUCCESS",
        "assetSelection": [{"path": ["shared", "regimes", "calendar"]}],
    }
    # The run wrote where the server's environment points the product, not into the project's folders.
    assert Lake(root=str(lake)).read(tables.REGIME_CALENDAR).height > 0

    for name in ("graph.png", "zl_partitions.png", "mes_partitions.png", "run.png"):
        png = (shots / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    _keep_screenshots(shots)
