"""The registry's web UI in real headless Chromium (Debian's package, driven by Playwright).

Run by scripts/ui-e2e.sh, which starts the registry with authentication on and logs two
training runs with `loanctl train`. The browser signs in through the basic-auth challenge,
walks the main pages taking screenshots, and moves the `champion` alias from version 1 to 2
through the confirmation page; the official MLflow client then sees the move over REST.
"""

import os
import pathlib

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect, sync_playwright

URL = os.environ["MLFLOW_TRACKING_URI"]
USER = os.environ["MLFLOW_TRACKING_USERNAME"]
PASSWORD = os.environ["MLFLOW_TRACKING_PASSWORD"]
SHOTS = pathlib.Path(os.environ.get("UI_SCREENSHOTS", "target/ui-screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        viewport={"width": 1280, "height": 900},
    )
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_without_credentials_the_browser_is_asked_to_sign_in(browser):
    # Headless Chromium cannot show the prompt, so read the challenge as it arrives, then the
    # page behind it (what the browser shows when the prompt is cancelled).
    ctx = browser.new_context()
    resp = ctx.request.get(URL + "/models")
    assert resp.status == 401
    assert resp.headers["www-authenticate"].startswith("Basic")
    assert 'href="/login"' in resp.text()
    pg = ctx.new_page()
    pg.set_content(resp.text())
    expect(pg.get_by_role("link", name="Sign in with a token")).to_be_visible()
    pg.goto(URL + "/login")
    expect(pg.get_by_label("Token")).to_be_visible()
    shot(pg, "00-sign-in")
    ctx.close()


def test_read_runs_plots_and_report(page):
    page.goto(URL + "/")
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    shot(page, "01-experiments")
    page.get_by_role("link", name="loan-default").first.click()
    expect(page.get_by_role("heading", name="loan-default")).to_be_visible()
    expect(page.get_by_role("link", name="train-v1")).to_be_visible()
    expect(page.get_by_role("link", name="train-v2")).to_be_visible()
    shot(page, "02-runs")

    # Sort by the AUC column, then compare both runs.
    page.get_by_role("link", name="test_roc_auc", exact=True).click()
    expect(page.locator("th[aria-sort=descending]")).to_have_count(1)
    for box in page.get_by_role("checkbox", name="Select").all():
        box.check()
    page.get_by_role("button", name="Compare selected runs").click()
    expect(page.get_by_role("heading", name="Comparing 2 runs")).to_be_visible()
    shot(page, "03-compare")

    page.get_by_role("link", name="train-v1").first.click()
    expect(page.get_by_role("heading", name="Metrics")).to_be_visible()
    expect(page.locator("svg[role=img]").first).to_be_visible()
    shot(page, "04-run")

    page.get_by_role("link", name="report.md").click()
    expect(page.get_by_role("heading", name="Training report")).to_be_visible()
    roc = page.get_by_role("img", name="ROC")
    expect(roc).to_be_visible()
    # The plot really loaded (a broken image has no natural width).
    assert roc.evaluate("img => img.naturalWidth") > 100
    shot(page, "05-report")


def test_promote_champion_with_confirmation(page):
    client = MlflowClient(URL)
    assert client.get_model_version_by_alias("loan-default", "champion").version == "1"

    page.goto(URL + "/models")
    shot(page, "06-models")
    page.get_by_role("link", name="loan-default").click()
    expect(page.get_by_role("heading", name="Versions", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Compare versions")).to_be_visible()
    shot(page, "07-model")

    page.get_by_label("Set alias").fill("champion")
    page.get_by_label("to version").select_option("2")
    page.get_by_role("button", name="Review change…").click()
    expect(page.get_by_text("from version 1 to version 2")).to_be_visible()
    # The two versions side by side: the serving one marked, the proposed one after it.
    expect(page.get_by_role("heading", name="What the move changes")).to_be_visible()
    expect(page.locator("table.compare tr.champion")).to_contain_text("serving")
    expect(page.locator("table.compare tr.candidate")).to_contain_text("proposed")
    shot(page, "08-confirm")
    # Nothing has moved until the confirmation is posted.
    assert client.get_model_version_by_alias("loan-default", "champion").version == "1"

    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_have_text("Alias “champion” now points to version 2.")
    shot(page, "09-promoted")
    assert client.get_model_version_by_alias("loan-default", "champion").version == "2"

    # Stage transition from the page, seen through REST too.
    page.get_by_label("Stage for version 2").select_option("Production")
    page.locator("tr#v2").get_by_role("button", name="Review…").click()
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_have_text("Version 2 is now in stage Production.")
    assert client.get_model_version("loan-default", "2").current_stage == "Production"
