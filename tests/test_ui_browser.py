"""The Dagster UI in a real browser (headless Debian Chromium driven by Playwright) over a small demo
instance: the asset graph, a backtest report's metrics and chart, complete candle partitions, a drift
score's ranked features. Screenshots and the webserver's log go to `.tradai/test-artifacts/browser/`
(git-ignored).

Marked `browser`: `make test` skips it, `make test-all` (CI) runs it; `scripts/install-browser` installs the
browser. Nothing is downloaded: Playwright's bundled driver launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.conftest import DEMO_CANDLES, PROJECT_ROOT
from tests.ui_instance import (
    HISTORY_END,
    HISTORY_START,
    MODEL_PAIRS,
    PAIRS,
    STRATEGY,
    Webserver,
    materialize_demo,
    open_instance,
    settings_from,
    start_webserver,
    ui_settings_env,
)
from tradai_core.settings import pair_slug
from tradai_replay.server import ReplayServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / ".tradai" / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAYS = (HISTORY_END - HISTORY_START).days
VIEWPORT = {"width": 1600, "height": 1000}
COMMUNITY_DIALOG = "Join the Dagster community"
GROUPS = ("market_data", "features", "models", "backtests", "model_lifecycle", "hyperopt")
TIMEOUT_MS = 60_000  # the machine is shared; GraphQL answers can take seconds
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """The small demo instance and `dagster-webserver` over it; stopped (TERM, wait, KILL) afterwards."""
    root = tmp_path_factory.mktemp("ui")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with ReplayServer(DEMO_CANDLES) as replay:
        env = ui_settings_env(root / "tradai", replay.base_url)
        materialize_demo(settings_from(env), open_instance(root / "dagster"))
        server = start_webserver(env, root / "dagster", ARTIFACTS / "webserver.log")
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium; Playwright gives it a fresh temporary profile (its own `--user-data-dir`)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `scripts/install-browser` (Debian's chromium) first")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def ui(browser: Browser, webserver: Webserver) -> str:
    """The UI's address, after a first visit closed Dagster's community dialog.

    A new instance shows it to its first visitor; once dismissed (the instance remembers), it stays away.
    """
    context = browser.new_context(base_url=webserver.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    first = context.new_page()
    try:
        first.goto("/asset-groups")
        dialog = first.get_by_role("dialog").filter(has_text=COMMUNITY_DIALOG)
        expect(dialog).to_be_visible()
        shot(first, "00-community-dialog")
        dialog.get_by_role("button", name="Skip").click()
        expect(dialog).to_have_count(0)
    finally:
        context.close()
    return webserver.url


@pytest.fixture
def page(browser: Browser, ui: str) -> Iterator[Page]:
    """A fresh page (new context) on the UI; should the community dialog come back, it is skipped."""
    context = browser.new_context(base_url=ui, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    community = tab.get_by_role("dialog").filter(has_text=COMMUNITY_DIALOG)
    tab.add_locator_handler(community, lambda dialog: dialog.get_by_role("button", name="Skip").click())
    try:
        yield tab
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """A screenshot into the artifacts folder."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def partition_panel(page: Page, asset: str, partition: str) -> None:
    """Open one partition of an asset (its Partitions tab) and wait for its metadata."""
    page.goto(f"/assets/{asset}?view=partitions&partition={quote(partition)}")
    expect(page.get_by_text("Metadata", exact=True)).to_be_visible()
    expect(page.get_by_text("Latest materialization", exact=True)).to_be_visible()


def key_cell(page: Page, key: str) -> Locator:
    """The first cell of a metadata row, by its exact key."""
    return page.locator("td:first-child").filter(has_text=re.compile(f"^\\s*{re.escape(key)}\\s*$"))


def metadata_row(page: Page, key: str) -> Locator:
    """The metadata row of `key`."""
    row = page.locator("tr").filter(has=key_cell(page, key))
    expect(row).to_have_count(1)
    return row


def rendered_markdown(page: Page, key: str) -> Locator:
    """Where a markdown entry is rendered: inline in its row, or (long ones) in the dialog its
    `[Show Markdown]` link opens."""
    row = metadata_row(page, key)
    link = row.get_by_text("[Show Markdown]", exact=True)
    if not link.count():
        return row.locator("td").nth(1)
    link.click()
    dialog = page.get_by_role("dialog").filter(has_text=key)
    expect(dialog).to_be_visible()
    return dialog


def close_dialog(page: Page) -> None:
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)


def loaded_images(scope: Locator) -> list[dict[str, int]]:
    """Size of every PNG image in `scope` the browser decoded (a broken image has width 0)."""
    return scope.locator("img[src^='data:image/png']").evaluate_all(
        "images => images.map(i => ({width: i.naturalWidth, height: i.naturalHeight, done: i.complete}))"
    )


def test_the_asset_graph_loads_with_every_group_and_the_candle_assets(page: Page) -> None:
    page.goto("/asset-groups")
    graph = page.locator("svg foreignObject")
    for group in GROUPS:
        expect(graph.get_by_text(group, exact=True)).to_have_count(1)
    expect(graph.get_by_text("fetching statuses")).to_have_count(0)
    graph.get_by_text("market_data", exact=True).dblclick()  # expand the group: one node per pair
    pairs = graph.get_by_text(re.compile("^(" + "|".join(pair_slug(p) for p in PAIRS) + ")$"))
    expect(pairs.first).to_be_visible()  # (nodes scrolled out of view are not drawn)
    expect(graph.get_by_text("Loading...")).to_have_count(0)  # their statuses arrived
    expect(graph.get_by_text("fetching statuses")).to_have_count(0)
    shot(page, "01-asset-graph")


def test_the_backtest_report_shows_its_metrics_table_and_chart(page: Page) -> None:
    partition_panel(page, "backtest_report", STRATEGY)
    metrics = rendered_markdown(page, "metrics")
    table = metrics.locator("table")
    expect(table).to_have_count(1)
    for metric in ("total profit", "max drawdown", "trades (W/D/L)"):
        expect(table.locator("tr").filter(has_text=metric)).to_have_count(1)
    for statistic in ("Sharpe", "Sortino", "Calmar", "SQN"):  # a number, or n/a with its reason
        row = table.locator("tr").filter(has=page.locator("td").filter(has_text=re.compile(f"^{statistic}$")))
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^(-?\d+\.\d\d|n/a \(.+\))$"))
    shot(page, "02-backtest-report-metrics")
    images: list[dict[str, int]] = []
    charts = page.locator("tr").filter(has=page.get_by_text("[Show Markdown]", exact=True))
    for index in range(charts.count()):  # every markdown entry the panel folds away: charts among them
        row = charts.nth(index)
        key = row.locator("td").first.inner_text().strip()
        dialog = rendered_markdown(page, key)
        found = loaded_images(dialog)
        if found:
            shot(page, f"03-backtest-report-chart-{key}")
        images += found
        close_dialog(page)
    images += loaded_images(page.locator("tr"))
    assert images, "no chart (PNG image) in the backtest report's metadata"
    assert all(i["done"] and i["width"] > 100 and i["height"] > 100 for i in images), images


def test_every_ohlcv_partition_bar_is_complete(page: Page) -> None:
    for pair in PAIRS:
        page.goto(f"/assets/ohlcv/{pair_slug(pair)}?view=partitions")
        expect(page.get_by_text(f"{DAYS} Partitions Selected")).to_be_visible()
        expect(page.get_by_text(f"Materialized ({DAYS})")).to_be_visible()
        for state in ("Failed", "Materializing", "Missing"):
            expect(page.get_by_text(f"{state} (0)")).to_be_visible()
        shot(page, f"04-ohlcv-partitions-{pair_slug(pair)}")


def test_a_drift_score_shows_its_features_ranked_by_psi(page: Page) -> None:
    partition_panel(page, "drift_score", pair_slug(MODEL_PAIRS[0]))
    top = metadata_row(page, "top_features").locator("td").nth(1).inner_text().split(",")[0].strip()
    features = rendered_markdown(page, "features")
    header = features.locator("thead tr, tr").first
    for column in ("rank", "feature", "PSI", "severity"):
        expect(header).to_contain_text(column)
    shot(page, "05-drift-score-features")
    rows = [r.locator("td").all_inner_texts() for r in features.locator("tbody tr").all()]
    assert len(rows) >= 5, rows
    ranks = [int(r[0]) for r in rows]
    psi = [float(r[2]) for r in rows]
    assert ranks == list(range(1, len(rows) + 1))
    assert psi == sorted(psi, reverse=True), psi
    assert rows[0][1] == top  # the table's first feature is the one the summary names first
