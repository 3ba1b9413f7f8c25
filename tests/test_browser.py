"""The web pages in a real browser: Playwright driving Debian's Chromium, headless.

One astronomer's session from sign-in to sign-out: a validation error beside its field,
a job followed live to its end without reloading the page, a result downloaded, the
provenance graph opened, the lineage followed up to the job that made an input, an
ADQL query; and a second user who never sees the first one's jobs. On a failure each
open page's screenshot goes to test-screenshots/ at the repository's root."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import IN_CI, ROOT, Server, launch, new_user

playwright = pytest.importorskip("playwright.sync_api")
# the browser's side: the pages' server side runs on both databases in tests/test_web.py
pytestmark = pytest.mark.any_database

CHROMIUM = os.environ.get("OPUS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    server = launch(tmp_path_factory.mktemp("browser"), {"OPUS_ALLOW_ANONYMOUS": "false"})
    try:
        yield server, {n: new_user(server, n) for n in ("ada", "bob")}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if IN_CI:
            pytest.fail(f"Chromium is required in CI and is not at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser: Any, request: pytest.FixtureRequest) -> Iterator[list[Any]]:
    """Pages of fresh browser contexts (one a user); screenshots of each on failure."""
    contexts: list[Any] = []
    opened: list[Any] = []

    def new_page() -> Any:
        context = browser.new_context(accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        opened.append(page)
        return page

    yield [new_page]
    report = getattr(request.node, "rep_call", None)  # set by conftest's hook
    if report is None or report.failed:
        SHOTS.mkdir(exist_ok=True)
        for i, page in enumerate(opened):
            page.screenshot(path=str(SHOTS / f"{request.node.name}-{i}.png"), full_page=True)
    for context in contexts:
        context.close()


def sign_in(page: Any, url: str, name: str, token: str) -> None:
    page.goto(f"{url}/")
    assert page.url.startswith(f"{url}/login")  # a visitor is sent to sign in
    page.get_by_label("User name").fill(name)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    assert f"signed in as {name}" in page.locator("header").inner_text()


def test_an_astronomers_session_from_sign_in_to_sign_out(
    site: tuple[Server, dict[str, str]], pages: list[Any]
) -> None:
    server, tokens = site
    url = server.url
    page = pages[0]()
    sign_in(page, url, "ada", tokens["ada"])

    # a value the browser accepts and the server does not: its message beside the field
    page.get_by_role("link", name="hello").click()
    page.get_by_text("Optional parameters (defaults filled in)").click()  # folded away
    page.locator("#f-name").evaluate("field => field.value = 'bad\\u0001value'")
    page.get_by_role("button", name="Run the job").click()
    error = page.locator("#name-error")
    assert "XML" in error.inner_text() or "character" in error.inner_text()
    assert page.locator("#f-name").get_attribute("aria-invalid") == "true"
    assert page.locator(".error-summary").is_visible()

    # a job followed live: the page is not reloaded (a value set in it survives)
    page.goto(f"{url}/new/sleeper")
    page.get_by_text("Optional parameters (defaults filled in)").click()
    page.get_by_label("seconds").fill("1.2")  # its executionDuration is 2 s
    page.get_by_role("button", name="Run the job").click()
    page.wait_for_url(re.compile(rf"{url}/jobs/sleeper/[0-9a-f]{{16}}$"))
    sleeper_url = page.url
    sleeper_id = sleeper_url.rsplit("/", 1)[1]
    page.evaluate("window.stillThisPage = true")
    assert page.locator("#phase").inner_text() in ("QUEUED", "EXECUTING")
    page.locator("#phase", has_text="COMPLETED").wait_for(timeout=20_000)
    page.get_by_role("link", name="done", exact=True).wait_for()
    assert page.evaluate("window.stillThisPage") is True

    # a result downloaded
    with page.expect_download() as download:
        page.get_by_role("link", name="done", exact=True).click()
    assert Path(download.value.path()).read_text() == "slept\n"

    # the provenance graph opens
    graph = page.request.get(
        f"{url}/rest/sleeper/{sleeper_id}/provenance?RESPONSEFORMAT=PROV-SVG&DEPTH=ALL"
    )
    assert graph.ok and "svg" in graph.headers["content-type"]
    page.get_by_role("link", name="PROV-SVG").click()
    assert "<svg" in page.content()
    page.go_back()

    # a job that used the sleeper's result: up its lineage to the job that made its input
    result = f"{url}/rest/sleeper/{sleeper_id}/results/done"
    made = requests.post(
        f"{url}/rest/opus_append",
        data={"PHASE": "RUN", "input": result, "text": "appended"},
        auth=("ada", tokens["ada"]),
        allow_redirects=False,
    )
    assert made.status_code == 303, made.text
    append_id = made.headers["Location"].rsplit("/", 1)[1]
    page.goto(f"{url}/jobs/opus_append/{append_id}")
    page.locator("#phase", has_text="COMPLETED").wait_for(timeout=20_000)
    # the graph drawn in the page: both jobs, attributes in tooltips, no agents until asked
    graph = page.locator(".graph svg")
    graph.locator("g.node.activity").nth(1).wait_for()  # once the page has its new part
    assert graph.locator("g.node.activity").count() == 2
    assert graph.locator("g.node.agent").count() == 0
    sleeper_node = graph.locator("g.node.activity", has_text="sleeper")
    assert "parameter seconds = 1.2" in sleeper_node.locator("title").text_content()
    page.get_by_role("link", name="Show agents").click()
    page.locator(".graph svg g.node.agent").first.wait_for()
    # up the lineage: the node of the job that made the input leads to its page
    page.locator(".graph svg g.node.activity", has_text="sleeper").locator("a").click()
    page.wait_for_url(sleeper_url)
    assert "sleeper job" in page.locator("h1").inner_text()
    # and through the entity page's table of the same lineage
    page.goto(f"{url}/jobs/opus_append/{append_id}")
    page.get_by_role("link", name="lineage").first.click()
    page.wait_for_url(re.compile(rf"{url}/entities/[0-9a-f]+"))
    page.locator(f"table.steps a[href='/jobs/{sleeper_id}']").click()
    page.wait_for_url(sleeper_url)

    # an ADQL query, its ids linking to pages
    page.get_by_role("link", name="Query").click()
    page.get_by_label("ADQL query").fill(
        "SELECT TOP 5 id, name FROM provenance.entity ORDER BY generatedAtTime DESC"
    )
    page.get_by_role("button", name="Run").click()
    rows = page.locator("table.result tbody tr")
    assert rows.count() >= 2
    page.locator("table.result a").first.click()
    page.wait_for_url(re.compile(rf"{url}/entities/"))

    # signed out, the pages ask to sign in again
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{url}/jobs")
    assert page.url.startswith(f"{url}/login")

    # another user never sees ada's jobs
    other = pages[0]()
    sign_in(other, url, "bob", tokens["bob"])
    for path in ("/", "/jobs"):
        other.goto(f"{url}{path}")
        assert sleeper_id not in other.content() and append_id not in other.content()
    other.goto(sleeper_url)
    assert "404" in other.content() or "no job" in other.content()


AXE = ROOT / "tests" / "axe" / "node_modules" / "axe-core" / "axe.min.js"


def axe_problems(page: Any) -> list[str]:
    """What axe-core finds serious or critical on the page, one line each."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_every_page_passes_axe_core(site: tuple[Server, dict[str, str]], pages: list[Any]) -> None:
    if not AXE.is_file():
        message = f"axe-core is not installed ({AXE}): see .ci/run"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server, tokens = site
    url = server.url
    page = pages[0]()
    page.goto(f"{url}/login")
    problems = {"/login": axe_problems(page)}
    sign_in(page, url, "ada", tokens["ada"])
    made = requests.post(
        f"{url}/rest/hello",
        data={"PHASE": "RUN", "name": "Axe"},
        auth=("ada", tokens["ada"]),
        allow_redirects=False,
    )
    job_id = made.headers["Location"].rsplit("/", 1)[1]
    page.goto(f"{url}/jobs/hello/{job_id}")
    page.locator("#phase", has_text="COMPLETED").wait_for(timeout=20_000)
    entity = page.get_by_role("link", name="lineage").first.get_attribute("href")
    table = requests.post(  # a job whose input, a CSV table, its entity page previews
        f"{url}/rest/opus_append",
        data={"PHASE": "RUN", "text": "x"},
        files={"input": ("stars.csv", b"name,mag\nVega,0.03\n", "text/csv")},
        auth=("ada", tokens["ada"]),
        allow_redirects=False,
    )
    page.goto(f"{url}/jobs/opus_append/{table.headers['Location'].rsplit('/', 1)[1]}")
    page.locator("#phase", has_text="COMPLETED").wait_for(timeout=20_000)
    csv_entity = page.locator("table.steps a", has_text="stars.csv").get_attribute("href")
    paths = [
        "/",
        "/jobs",
        "/new/hello",
        "/new/gammapy_maps",
        f"/jobs/hello/{job_id}",
        entity,
        csv_entity,
        "/query?QUERY=SELECT+TOP+3+id,name+FROM+provenance.entity",
        "/tokens",
    ]
    for path in paths:
        page.goto(f"{url}{path}")
        problems[path] = axe_problems(page)
    page.goto(f"{url}{csv_entity}")  # the table previewed was among the pages checked
    assert page.locator("table.preview td", has_text="Vega").count() == 1
    page.goto(f"{url}/new/gammapy_maps")  # a form showing a server's error
    page.get_by_text("Optional parameters (defaults filled in)").click()
    page.locator("#f-nxpix").evaluate(
        "field => { field.removeAttribute('min'); field.value = '0' }"
    )
    page.get_by_role("button", name="Run the job").click()
    page.locator("#nxpix-error").wait_for()
    problems["form with an error"] = axe_problems(page)
    assert not {k: v for k, v in problems.items() if v}, problems
    # the check itself finds what it should
    page.set_content("<html><body><img src='x.png'><input type='text'></body></html>")
    assert any(p.startswith("image-alt") for p in axe_problems(page))
