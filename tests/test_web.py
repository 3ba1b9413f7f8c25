"""The web pages against a real server, as a browser without JavaScript uses them
(requests keeps the cookies): sign-in and out with a session cookie, CSRF on every form,
a submission form made from its definition, the server's validation message beside the
field it names, the job page, escaping, and one user's jobs never on another's pages.
The browser tier (Chromium with Playwright) comes with the rest of the web issue."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from astropy.io import fits
from lxml import etree, html

from tests.servers import Server, launch, new_user

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Site:
    server: Server
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server that needs credentials, with users ada and bob."""
    server = launch(tmp_path_factory.mktemp("web"), {"OPUS_ALLOW_ANONYMOUS": "false"})
    try:
        yield Site(server, {n: new_user(server, n) for n in ("ada", "bob")})
    finally:
        server.stop()


def csrf_of(page: requests.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def signed_in(site: Site, name: str) -> requests.Session:
    browser = requests.Session()
    form = browser.get(f"{site.server.url}/login")
    assert form.status_code == 200
    answer = browser.post(
        f"{site.server.url}/login",
        data={"name": name, "token": site.tokens[name], "next": "/jobs", "csrf": csrf_of(form)},
        allow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/jobs"
    return browser


def test_a_visitor_is_sent_to_sign_in_and_a_wrong_token_is_refused(site: Site) -> None:
    url = site.server.url
    visitor = requests.Session()
    answer = visitor.get(f"{url}/new/hello", allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/login?next=/new/hello"
    page = visitor.get(f"{url}/login")
    doc = html.fromstring(page.text)
    assert doc.xpath("//label[@for='name']") and doc.xpath("//input[@id='token'][@type='password']")
    wrong = visitor.post(
        f"{url}/login", data={"name": "ada", "token": site.tokens["bob"], "csrf": csrf_of(page)}
    )
    assert wrong.status_code == 401 and "wrong user name or token" in wrong.text
    # a sign-in posted from another site (no CSRF token of this browser's) is refused
    forged = requests.post(f"{url}/login", data={"name": "ada", "token": site.tokens["ada"]})
    assert forged.status_code == 403 and "opus_session" not in forged.cookies
    assert "opus_session" not in visitor.cookies
    assert visitor.get(f"{url}/rest/hello").status_code == 401  # the REST API needs credentials


def test_signing_in_sets_a_safe_session_cookie_and_signing_out_ends_it(site: Site) -> None:
    url = site.server.url
    browser = requests.Session()
    form = browser.get(f"{url}/login")
    answer = browser.post(
        f"{url}/login",
        data={"name": "ada", "token": site.tokens["ada"], "csrf": csrf_of(form)},
        allow_redirects=False,
    )
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("opus_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain HTTP here; behind TLS it is Secure
    home = browser.get(f"{url}/")
    assert "signed in as <strong>ada</strong>" in home.text
    # the session also reads the REST API's documents (downloads, previews), not posts to it
    assert browser.get(f"{url}/rest/hello").status_code == 200
    assert browser.post(f"{url}/rest/hello", data={"name": "x"}).status_code == 401
    # a tampered cookie is no session
    forged = requests.Session()
    forged.cookies.set("opus_session", browser.cookies["opus_session"][:-2] + "00")
    assert forged.get(f"{url}/", allow_redirects=False).status_code == 303
    out = browser.post(f"{url}/logout", data={"csrf": csrf_of(home)}, allow_redirects=False)
    assert out.status_code == 303
    assert browser.get(f"{url}/", allow_redirects=False).status_code == 303


def test_every_form_that_changes_something_needs_its_csrf_token(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    assert browser.post(f"{url}/new/hello", data={"name": "x"}).status_code == 403
    assert browser.post(f"{url}/new/hello", data={"name": "x", "csrf": "0" * 32}).status_code == 403
    assert browser.post(f"{url}/logout", data={}).status_code == 403
    # the token of another session is not this one's
    other = signed_in(site, "bob")
    theirs = csrf_of(other.get(f"{url}/new/hello"))
    assert browser.post(f"{url}/new/hello", data={"name": "x", "csrf": theirs}).status_code == 403


def test_the_form_follows_the_definition(site: Site) -> None:
    browser = signed_in(site, "ada")
    page = browser.get(f"{site.server.url}/new/gammapy_maps")
    assert page.status_code == 200
    doc = html.fromstring(page.text)
    nxpix = doc.get_element_by_id("f-nxpix")
    assert (nxpix.get("type"), nxpix.get("min"), nxpix.get("max"), nxpix.get("step")) == (
        "number",
        "1",
        "2000",
        "1",
    )
    assert nxpix.get("value") == "250"
    assert doc.get_element_by_id("f-binsz").get("step") == "any"
    projection = doc.get_element_by_id("f-projection")
    assert projection.tag == "select"
    assert [o.text for o in projection.iter("option")] == ["CAR", "TAN", "AIT", "SIN"]
    assert doc.get_element_by_id("f-rerun").get("type") == "checkbox"
    # every control has its label, and its description and unit beside it
    for control in doc.xpath("//form[@enctype]//input[@id] | //form[@enctype]//select[@id]"):
        assert doc.xpath(f"//label[@for='{control.get('id')}']"), control.get("id")
    assert "map width [pixel]" in doc.get_element_by_id("nxpix-help").text_content()
    # inputs by upload: several files where the definition takes several
    alerts = html.fromstring(browser.get(f"{site.server.url}/new/t0_ingest_alerts").text)
    field = alerts.get_element_by_id("f-alerts")
    assert field.get("type") == "file" and field.get("multiple") is not None


def test_a_bad_value_is_shown_beside_its_field_and_nothing_runs(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    form = browser.get(f"{url}/new/gammapy_maps")
    answer = browser.post(
        f"{url}/new/gammapy_maps",
        data={"csrf": csrf_of(form), "nxpix": "0", "binsz": "0.05"},
        allow_redirects=False,
    )
    assert answer.status_code == 400
    doc = html.fromstring(answer.text)
    error = doc.get_element_by_id("nxpix-error")
    assert "below the minimum 1" in error.text_content()
    assert doc.get_element_by_id("f-nxpix").get("aria-invalid") == "true"
    assert doc.get_element_by_id("f-binsz").get("value") == "0.05"  # what was typed is kept
    summary = doc.xpath("//div[@class='error-summary']//a/@href")
    assert summary == ["#f-nxpix"]
    jobs = browser.get(f"{url}/rest/gammapy_maps").text
    assert "jobref" not in jobs


def test_submitting_runs_the_job_and_its_page_shows_it_escaped(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    form = browser.get(f"{url}/new/hello")
    name = "<script>alert('x')</script>"
    answer = browser.post(
        f"{url}/new/hello", data={"csrf": csrf_of(form), "name": name}, allow_redirects=False
    )
    assert answer.status_code == 303
    job_page = answer.headers["Location"]
    assert re.fullmatch(r"/jobs/hello/[0-9a-f]{16}", job_page)
    deadline = time.monotonic() + 30
    while "phase-completed" not in (page := browser.get(f"{url}{job_page}")).text:
        assert time.monotonic() < deadline, page.text
        time.sleep(0.2)
    assert name not in page.text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    link = html.fromstring(page.text).xpath("//ul[@class='results']//a[@download]/@href")
    assert link == [f"/rest/hello/{job_page.rsplit('/', 1)[1]}/results/greeting"]
    assert browser.get(f"{url}{link[0]}").text == f"Hello, {name}!\n"
    assert job_page.rsplit("/", 1)[1] in browser.get(f"{url}/").text


def test_one_users_jobs_never_appear_on_anothers_pages(site: Site) -> None:
    url = site.server.url
    ada, bob = signed_in(site, "ada"), signed_in(site, "bob")
    form = ada.get(f"{url}/new/hello")
    made = ada.post(
        f"{url}/new/hello", data={"csrf": csrf_of(form), "name": "private"}, allow_redirects=False
    )
    page = made.headers["Location"]
    job_id = page.rsplit("/", 1)[1]
    assert job_id in ada.get(f"{url}/jobs").text
    for path in ("/", "/jobs", "/jobs?jobdef=hello"):
        assert job_id not in bob.get(f"{url}{path}").text
    assert bob.get(f"{url}{page}").status_code == 404


def submitted(
    site: Site, browser: requests.Session, jobdef: str, data: dict[str, str], **files: Any
) -> str:
    """A job submitted through its form (as a browser does): its page's path."""
    url = site.server.url
    form = browser.get(f"{url}/new/{jobdef}")
    made = browser.post(
        f"{url}/new/{jobdef}",
        data={"csrf": csrf_of(form), **data},
        files=files or None,
        allow_redirects=False,
    )
    assert made.status_code == 303, made.text
    return str(made.headers["Location"])


def completed(site: Site, browser: requests.Session, page: str) -> str:
    """The job page's HTML once the job has completed."""
    deadline = time.monotonic() + 30
    while "phase-completed" not in (shown := browser.get(f"{site.server.url}{page}").text):
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    return shown


def completed_job(site: Site, browser: requests.Session, name: str) -> str:
    """A hello job run through the form: its page's path, once it has completed."""
    page = submitted(site, browser, "hello", {"name": name})
    completed(site, browser, page)
    return page


def test_an_entity_page_says_what_made_it_and_its_lineage(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    page = completed_job(site, browser, "Lineage")
    job_id = page.rsplit("/", 1)[1]
    doc = html.fromstring(browser.get(f"{url}{page}").text)
    (entity_link,) = doc.xpath("//ul[@class='results']//a[text()='lineage']/@href")
    entity = browser.get(f"{url}{entity_link}")
    assert entity.status_code == 200
    text = html.fromstring(entity.text).text_content()
    assert "greeting.txt" in text and "text/plain" in text
    stored = site.server.session.get(  # the bytes, as their checksum says
        f"{url}/rest/hello/{job_id}/results/greeting",
        auth=("ada", site.tokens["ada"]),
    )
    assert hashlib.sha256(stored.content).hexdigest() in entity.text
    assert f'href="/jobs/hello/{job_id}"' in entity.text
    # lineage up, as a table and as a drawing: the job that generated it
    tree = html.fromstring(entity.text)
    made_from = tree.xpath("//table[@class='steps'][caption='What it was made from']")[0]
    assert made_from.xpath(f".//a[@href='/jobs/{job_id}']/text()") == ["hello"]
    assert "greeting.txt" in made_from.text_content()
    svg = "{http://www.w3.org/2000/svg}"
    drawing = etree.fromstring(
        entity.text[entity.text.index("<svg") : entity.text.index("</svg>") + 6]
    )
    activity = next(g for g in drawing.iter(f"{svg}g") if g.get("class") == "node activity")
    assert "parameter name = Lineage" in activity.findtext(f"{svg}title")
    anchor = activity.find(f".//{svg}a")
    assert anchor.get("{http://www.w3.org/1999/xlink}href") == f"/jobs/{job_id}"
    assert not [g for g in drawing.iter(f"{svg}g") if g.get("class") == "node agent"]
    with_agents = browser.get(f"{url}{entity_link}", params={"agents": "1"}).text
    assert 'class="node agent"' in with_agents and "Hide agents" in with_agents
    nothing = browser.get(f"{url}{entity_link}", params={"depth": "1"})
    assert "What was made from it: nothing recorded" in nothing.text
    again = html.fromstring(entity.text).xpath("//a[text()='run again with the same parameters']")
    form = browser.get(f"{url}{again[0].get('href')}")
    assert html.fromstring(form.text).get_element_by_id("f-name").get("value") == "Lineage"
    # another user's entity is not found
    bob = signed_in(site, "bob")
    assert bob.get(f"{url}{entity_link}").status_code == 404


def test_an_input_is_picked_from_earlier_results_or_given_by_url(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    page = completed_job(site, browser, "Picked")
    made = html.fromstring(browser.get(f"{url}{page}").text)
    (entity_link,) = made.xpath("//ul[@class='results']//a[text()='lineage']/@href")
    entity_id = entity_link.rsplit("/", 1)[1]
    form = browser.get(f"{url}/new/opus_append")
    tree = html.fromstring(form.text)
    picks = tree.get_element_by_id("f-input-pick")
    assert entity_id in picks.xpath("./option/@value")
    assert tree.xpath("//label[@for='f-input-url']") and tree.xpath("//label[@for='f-input']")
    assert "bob" not in form.text  # only ada's own results are offered
    result_url = f"{url}{page.replace('/jobs/', '/rest/')}/results/greeting"
    for given in (entity_id, result_url):
        job = submitted(site, browser, "opus_append", {"input": given, "text": " appended"})
        shown = completed(site, browser, job)
        steps = html.fromstring(shown).xpath("//table[@class='steps']")[0]
        used = steps.xpath(f".//a[@href='/entities/{entity_id}']/text()")
        assert used, shown  # the lineage shows the picked result as what the job used
    # a URL the server may not fetch: the reason beside the input, nothing created
    refused = browser.post(
        f"{url}/new/opus_append",
        data={"csrf": csrf_of(form), "input": "http://127.0.0.1:9/secret", "text": "x"},
        allow_redirects=False,
    )
    assert refused.status_code == 400
    error = html.fromstring(refused.text).get_element_by_id("input-error").text_content()
    assert "127.0.0.1" in error or "address" in error, error


def test_pages_preview_a_fits_map_and_a_table(site: Site, tmp_path: Path) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    y, x = np.mgrid[0:64, 0:64]
    fits_file = tmp_path / "map.fits"
    fits.PrimaryHDU(np.exp(-((x - 20) ** 2 + (y - 40) ** 2) / 30.0)).writeto(fits_file)
    for name, body, content_type in (
        ("map.fits", fits_file.read_bytes(), "application/fits"),
        ("stars.csv", b"name,mag\n<b>Vega</b>,0.03\n", "text/csv"),
    ):
        job = submitted(
            site, browser, "opus_append", {"text": "x"}, input=(name, body, content_type)
        )
        page = completed(site, browser, job)
        steps = html.fromstring(page).xpath("//table[@class='steps']")[0]
        (entity,) = steps.xpath(f".//a[text()='{name}']/@href")
        shown = browser.get(f"{url}{entity}")
        tree = html.fromstring(shown.text)
        if name == "map.fits":
            assert "HDU 0 PRIMARY (64 x 64)" in tree.text_content()
            (src,) = tree.xpath("//img[@class='preview']/@src")
            image = browser.get(f"{url}{src}")
            assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
            assert image.content.startswith(b"\x89PNG")
            assert bob_cannot(site, f"{url}{src}")
        else:
            table = tree.xpath("//table[@class='preview']")[0]
            assert table.xpath(".//th/text()") == ["name", "mag"]
            assert table.xpath(".//td/text()")[0] == "<b>Vega</b>"  # shown, not markup
            assert "<b>Vega" not in shown.text
            # a text result is previewed on its job's page
            assert "preview" in page and "x" in html.fromstring(page).xpath("string(//pre)")


def test_a_running_jobs_page_shows_how_long_it_has_run(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    job = submitted(site, browser, "sleeper", {"seconds": "1.8"})
    rest = f"{url}{job.replace('/jobs/', '/rest/')}"
    deadline = time.monotonic() + 20
    while browser.get(f"{rest}/phase").text != "EXECUTING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page = html.fromstring(browser.get(f"{url}{job}").text)
    (progress,) = page.xpath("//progress[@id='progress']")
    assert progress.get("max") == "2" and int(progress.get("value")) <= 2
    assert page.xpath("//label[@for='progress']")
    browser.get(rest, params={"WAIT": "10", "PHASE": "EXECUTING"})
    assert not html.fromstring(browser.get(f"{url}{job}").text).xpath("//progress")


def bob_cannot(site: Site, address: str) -> bool:
    return signed_in(site, "bob").get(address).status_code == 404


def test_the_query_page_runs_adql_and_links_ids_to_pages(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    completed_job(site, browser, "Queried")
    query = "SELECT TOP 5 id, name FROM provenance.entity ORDER BY generatedAtTime DESC"
    page = browser.get(f"{url}/query", params={"QUERY": query})
    assert page.status_code == 200
    doc = html.fromstring(page.text)
    links = doc.xpath("//table[@class='result']//a/@href")
    assert links and all(link.startswith("/entities/") for link in links)
    assert browser.get(f"{url}{links[0]}").status_code == 200
    assert doc.get_element_by_id("adql").text == query
    # an error says what is wrong, on the page
    bad = browser.get(f"{url}/query", params={"QUERY": "SELECT * FROM users"})
    assert bad.status_code == 200 and "users" in html.fromstring(bad.text).xpath(
        "string(//div[@class='error-summary'])"
    )
    # the worked examples run
    for href in doc.xpath("//ul[@class='examples']//a/@href"):
        example = browser.get(f"{url}{href}")
        assert example.status_code == 200 and "error-summary" not in example.text, href


def test_a_user_makes_and_revokes_their_own_api_tokens(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    page = browser.get(f"{url}/tokens")
    assert page.status_code == 200
    before = html.fromstring(page.text).xpath("//form[@action='/tokens/revoke']")
    made = browser.post(f"{url}/tokens", data={"csrf": csrf_of(page)})
    assert made.status_code == 201
    token = html.fromstring(made.text).get_element_by_id("new-token").text
    assert token.startswith("opus_")
    key = token.removeprefix("opus_").partition(".")[0]
    listed = html.fromstring(browser.get(f"{url}/tokens").text)
    assert len(listed.xpath("//form[@action='/tokens/revoke']")) == len(before) + 1
    assert token not in browser.get(f"{url}/tokens").text  # shown once, then only its key
    rest = requests.get(f"{url}/rest/hello", headers={"Authorization": f"Bearer {token}"})
    assert rest.status_code == 200
    # revoking needs the CSRF token, and only one's own tokens
    assert browser.post(f"{url}/tokens/revoke", data={"key": key}).status_code == 403
    bob = signed_in(site, "bob")
    theirs = csrf_of(bob.get(f"{url}/tokens"))
    assert bob.post(f"{url}/tokens/revoke", data={"key": key, "csrf": theirs}).status_code == 404
    revoked = browser.post(
        f"{url}/tokens/revoke", data={"key": key, "csrf": csrf_of(made)}, allow_redirects=False
    )
    assert revoked.status_code == 303 and revoked.headers["Location"].endswith("/tokens")
    # a web process keeps a verified token 5 s (opus.auth.CACHE_SECONDS): refused after that
    deadline = time.monotonic() + 8
    while requests.get(f"{url}/rest/hello", headers={"Authorization": f"Bearer {token}"}).ok:
        assert time.monotonic() < deadline, "the revoked token still works"
        time.sleep(0.5)


def test_the_job_pages_buttons_abort_change_destruction_and_delete(site: Site) -> None:
    url = site.server.url
    browser = signed_in(site, "ada")
    page = completed_job(site, browser, "Buttons")
    token = csrf_of(browser.get(f"{url}{page}"))
    later = "2026-12-31T00:00:00Z"
    moved = browser.post(
        f"{url}{page}",
        data={"csrf": token, "action": "DESTRUCTION", "destruction": later},
        allow_redirects=False,
    )
    assert moved.status_code == 303
    rest = page.replace("/jobs/", "/rest/")
    auth = ("ada", site.tokens["ada"])
    destruction = requests.get(f"{url}{rest}/destruction", auth=auth).text
    assert destruction.startswith("2026-12-31T00:00:00")
    bad = browser.post(f"{url}{page}", data={"csrf": token, "action": "EXPLODE"})
    assert bad.status_code == 400 and "action" in bad.text
    bob = signed_in(site, "bob")
    theirs = csrf_of(bob.get(f"{url}/"))
    assert bob.post(f"{url}{page}", data={"csrf": theirs, "action": "DELETE"}).status_code == 404
    gone = browser.post(
        f"{url}{page}", data={"csrf": token, "action": "DELETE"}, allow_redirects=False
    )
    assert gone.status_code == 303 and gone.headers["Location"].endswith("/jobs")
    assert browser.get(f"{url}{page}").status_code == 404


def test_the_job_list_pages_through_many_jobs(site: Site) -> None:
    """120 jobs of ada's (rows written as a server writes them): three pages, newest
    first, each following on where the last ended; bob sees none of them."""
    from datetime import timedelta

    import sqlalchemy

    from opus.store import jobs as store
    from opus.timeutil import utcnow

    url = site.server.url
    start = utcnow() + timedelta(days=1)  # newer than every other job of the module
    made = [
        store.new_job(
            id=f"{i:016x}",
            jobdef="hello",
            owner="ada",
            phase="COMPLETED",
            creation_time=start + timedelta(seconds=i),
            execution_duration=60,
            destruction=start + timedelta(days=30),
            run_id=f"paged-{i}",
        )
        for i in range(120)
    ]
    engine = sqlalchemy.create_engine(site.server.db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.insert(store.jobs), made)
    engine.dispose()
    browser = signed_in(site, "ada")
    seen: list[str] = []
    path: str | None = "/jobs?jobdef=hello"
    while path and len(seen) < 120:
        doc = html.fromstring(browser.get(f"{url}{path}").text)
        seen += [a.text for a in doc.xpath("//table[@class='jobs']//td[1]/a")]
        nxt = doc.xpath("//a[@rel='next']/@href")
        path = nxt[0] if nxt else None
    assert seen[:120] == [f"paged-{i}" for i in reversed(range(120))]
    oldest: list[str] = []  # and oldest first, through every hello job of the module
    path = "/jobs?jobdef=hello&order=oldest"
    while path:
        doc = html.fromstring(browser.get(f"{url}{path}").text)
        oldest += [a.text for a in doc.xpath("//table[@class='jobs']//td[1]/a")]
        nxt = doc.xpath("//a[@rel='next']/@href")
        path = nxt[0] if nxt else None
    assert [s for s in oldest if s.startswith("paged-")] == [f"paged-{i}" for i in range(120)]
    assert oldest[-120:] == [f"paged-{i}" for i in range(120)]
    bob = signed_in(site, "bob")
    assert "paged-" not in bob.get(f"{url}/jobs").text
    assert bob.get(f"{url}/jobs", params={"phase": "DANCING"}).status_code == 400


def test_a_session_key_made_meanwhile_by_another_worker_is_the_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's workers start together: one that found no key while another was writing
    it reads the other's key (it once failed to boot, and the server with it)."""
    from opus.config import Settings
    from opus.web.session import secret_key

    settings = Settings(data_dir=tmp_path)
    made = secret_key(settings)
    assert len(made) == 64 and (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(Path, "exists", lambda self: False)  # checked before it was written
    assert secret_key(settings) == made
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no draft left
