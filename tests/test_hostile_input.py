"""Hostile input end to end: each answered with a clear 4xx, nothing executed, leaked or lost.

One server of the module's own, with a small body limit, a short WAIT maximum and a folder
of malformed definitions beside the test ones. Values with shell syntax reach the jobs as
data; paths that climb out, links a job leaves in its folder and odd file names serve
nothing they should not; markup comes back as text in every document; bodies over the
limit are refused before anything is stored; what cannot be read is a 400, never a 5xx.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests
from lxml import etree

from tests.servers import TEST_JOBDEFS, Server, launch

LIMIT = 2**20  # OPUS_MAX_UPLOAD_BYTES of the module's server
MAX_WAIT = 2  # its OPUS_MAX_WAIT, s
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
BOUNDARY = "hostile-boundary-1234"
MARKUP = "<script>alert(1)</script> ]]> \"double\" 'single' &amp; <b>bold</b>"
SAFE_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]*"

# Malformed definitions, each named in the list of invalid ones and served nowhere.
GOOD = (TEST_JOBDEFS / "failing_vot.xml").read_text()
BAD_DEFINITIONS: dict[str, tuple[bytes, str, str]] = {
    # file: (content, field, words of the reason)
    "notxml_vot.xml": (b"this is <not XML", "file", "not readable XML"),
    "wrongroot_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_root"')
        .replace("<VOTABLE", "<html")
        .replace("</VOTABLE>", "</html>")
        .encode(),
        "file",
        "not <VOTABLE>",
    ),
    "noname_vot.xml": (
        GOOD.replace('ID="failing" name="failing" ', "").encode(),
        "name",
        "not a safe URL path segment",
    ),
    "datatype_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_datatype"')
        .replace('name="reason" datatype="char"', 'name="reason" datatype="quaternion"')
        .encode(),
        "GROUP InputParams",
        "unknown datatype",
    ),
    "twice_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_twice"')
        .replace(
            '<GROUP name="InputParams">',
            '<GROUP name="InputParams"><PARAM name="Reason" datatype="int" value="1"/>',
        )
        .encode(),
        "definition",
        "declared twice",
    ),
    "default_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_default"')
        .replace('name="reason" datatype="char"', 'name="reason" datatype="int"')
        .encode(),
        "parameters 'reason'",
        "not an integer",
    ),
    "bounds_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_bounds"')
        .replace(
            'name="reason" datatype="char" arraysize="*" value="no reason"/>',
            'name="reason" datatype="int" value="5"><VALUES><MIN value="10"/>'
            '<MAX value="1"/></VALUES></PARAM>',
        )
        .encode(),
        "parameters 'reason'",
        "MIN 10 is above MAX 1",
    ),
    "encoding_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_encoding"')
        .encode()
        .replace(b"cannot work", b"cannot \xff\xfe work"),
        "file",
        "not readable XML",
    ),
    "command_vot.xml": (
        re.sub(
            r'<PARAM name="script"[^>]*>',
            f'<PARAM name="command" value="{"[" * 100_000}" datatype="char"/>',
            GOOD.replace('name="failing"', 'name="bad_command"'),
        ).encode(),
        "script/command/callable/pipeline",
        "recursion",
    ),
    "laughs_vot.xml": (
        (
            '<?xml version="1.0"?><!DOCTYPE VOTABLE [<!ENTITY a "aaaaaaaaaa">'
            + "".join(
                f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
            )
            + "]>"
            + GOOD.split("?>", 1)[1]
            .replace('name="failing"', 'name="bad_laughs"')
            .replace('value="no reason"', 'value="&j;"')
        ).encode(),
        "file",
        "amplification",
    ),
    "huge_vot.xml": (
        GOOD.replace('name="failing"', 'name="bad_huge"')
        .replace("Fails with a message", "x" * (5 * 2**20))
        .encode(),
        "file",
        "bytes",
    ),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def markers(base: Path) -> Path:
    """Where an injection that worked would leave its marker files."""
    folder = base / "markers"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def hostile(base: Path) -> Iterator[Server]:
    bad = base / "bad_jobdefs"
    bad.mkdir()
    for name, (content, _, _) in BAD_DEFINITIONS.items():
        (bad / name).write_bytes(content)
    env = {
        "OPUS_MAX_UPLOAD_BYTES": str(LIMIT),
        "OPUS_MAX_WAIT": str(MAX_WAIT),
        "OPUS_JOBDEF_PATH": f"{TEST_JOBDEFS}:{bad}",
    }
    running = launch(base / "data", env)
    yield running
    running.stop()


# -- helpers ---------------------------------------------------------------------------------


def assert_text_error(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    assert response.text.endswith("\n") and response.text.count("\n") == 1, response.text
    for word in words:
        assert word in response.text, (word, response.text)


def raw_http(server: Server, request: bytes) -> tuple[int, list[bytes], bytes]:
    """Send bytes as they are (no client normalises the path); status, header lines, body."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *headers = head.split(b"\r\n")
    return int(status_line.split()[1]), headers, body


def raw_get(server: Server, target: str) -> tuple[int, list[bytes], bytes]:
    host = f"{server.host}:{server.port}"
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_http(server, request.encode())


def multipart(parts: list[tuple[bytes, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body of (part headers, content) as given, byte for byte."""
    body = b""
    for headers, content in parts:
        body += b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + boundary.encode() + b"--\r\n"


def file_part(field: str, file_name: bytes, content: bytes) -> tuple[bytes, bytes]:
    disposition = b'Content-Disposition: form-data; name="' + field.encode() + b'"; filename="'
    return disposition + file_name + b'"\r\nContent-Type: text/plain', content


def post_multipart(server: Server, jobdef: str, body: bytes | Iterator[bytes]) -> requests.Response:
    return requests.post(
        server.rest(jobdef),
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        allow_redirects=False,
        timeout=30,
    )


def job_ids(server: Server, jobdef: str) -> set[str]:
    doc = etree.fromstring(requests.get(server.rest(jobdef), timeout=30).content)
    return {str(ref.get("id")) for ref in doc.iter(f"{UWS}jobref")}


def stored_files(server: Server) -> set[Path]:
    uploads = server.data_dir / "uploads"
    return {p for p in uploads.rglob("*") if p.is_file()} if uploads.exists() else set()


def phase_and_error(doc: etree._Element) -> tuple[str, str]:
    return str(doc.findtext(f"{UWS}phase")), doc.findtext(f"{UWS}errorSummary/{UWS}message") or ""


def run(server: Server, jobdef: str, **params: object) -> tuple[str, etree._Element]:
    url = server.create(jobdef, True, None, **params)
    return url, server.wait_final(url)


def result(job_url: str, result_id: str) -> requests.Response:
    return requests.get(f"{job_url}/results/{quote(result_id)}", timeout=30)


def strings_of(value: object) -> Iterator[str]:
    """Every string in a JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def texts_of(doc: etree._Element) -> set[str]:
    """Every text and attribute value of an XML document."""
    found = {str(t) for t in doc.itertext()}
    for element in doc.iter():
        found |= {str(v) for v in element.attrib.values()}
    return found


def local_names(doc: etree._Element) -> set[str]:
    return {etree.QName(e).localname for e in doc.iter() if isinstance(e.tag, str)}


# -- 1. shell syntax in values, names, file names and URLs: data, never code -----------------

INJECTIONS = [
    "; touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "| touch {m}",
    "&& touch {m} &",
    "\ntouch {m}\n",
    "\r\ntouch {m}",
    "' ; touch {m} ; '",
    '" ; touch {m} ; "',
    "> {m}",
    "< /etc/passwd",
    "${{IFS}}touch${{IFS}}{m}",
    "$((6*7)) ${{HOME}} * ? ~ !!",
]


def test_shell_syntax_in_values_is_data(hostile: Server, markers: Path) -> None:
    # a script quoting its variable, a script passing it to printf, an argv command
    expected: dict[str, tuple[str, str, Callable[[str], str]]] = {
        "hostile": ("text", "out", lambda v: v + "\n"),
        "hello": ("name", "greeting", lambda v: f"Hello, {v}!\n"),
        "argv": ("word", "args", lambda v: json.dumps([v, "--", v])),
    }
    jobs = []
    for index, pattern in enumerate(INJECTIONS):
        value = pattern.format(m=markers / f"value{index}")
        for jobdef, (param, _, _) in expected.items():
            jobs.append((jobdef, value, hostile.create(jobdef, True, None, **{param: value})))
    for jobdef, value, url in jobs:
        phase, error = phase_and_error(hostile.wait_final(url))
        assert phase == "COMPLETED", (jobdef, value, error)
        _, result_id, written = expected[jobdef]
        response = result(url, result_id)
        assert response.status_code == 200
        assert response.content.decode() == written(value), (jobdef, value)
    assert sorted(markers.iterdir()) == []


BAD_NAMES = ["x;touch {m}", "$(touch {m})", "a\nb", "../../etc/passwd", "<script>", "text\x00"]


@pytest.mark.parametrize("pattern", BAD_NAMES)
def test_unknown_names_with_shell_syntax_are_400_naming_them(
    hostile: Server, markers: Path, pattern: str
) -> None:
    name = pattern.format(m=markers / "name")
    before = job_ids(hostile, "hostile")
    response = requests.post(
        hostile.rest("hostile"), data={name: "1", "PHASE": "RUN"}, allow_redirects=False
    )
    shown = name.replace("\n", "\\n").replace("\x00", "\\x00")
    assert_text_error(response, 400, f"parameter {shown}", "unknown")
    # an upload for no input of the definition (the client escapes what a multipart
    # header cannot hold): the same, and no file kept
    response = requests.post(
        hostile.rest("concat"), files={name: ("a.txt", b"x")}, allow_redirects=False
    )
    assert_text_error(response, 400)  # no input takes a file; or no readable form (NUL)
    assert job_ids(hostile, "hostile") == before
    assert sorted(markers.iterdir()) == []


UPLOAD_NAMES = [
    b"$(touch {m}).txt",
    b"a;touch {m};b.txt",
    b"`touch {m}`",
    b"--version",
    b"-n",
    b"../../../../escape.txt",
    b"..%2f..%2fescape2.txt",
    b"/etc/passwd",
    b"C:\\Windows\\win.ini",
    b"<script>alert(1)</script>.txt",
    b'quote\\".txt',
    "名前 ü.txt".encode(),
]


def test_upload_file_names_are_made_safe_and_stay_in_the_data_dir(
    hostile: Server, markers: Path, base: Path
) -> None:
    contents = [f"content {i}\n".encode() for i in range(len(UPLOAD_NAMES))]
    names = [n.replace(b"{m}", str(markers / "upload").encode()) for n in UPLOAD_NAMES]
    parts = [file_part("inputs", n, c) for n, c in zip(names, contents, strict=True)]
    response = post_multipart(hostile, "concat", multipart([*parts, (PHASE_RUN, b"RUN")]))
    assert response.status_code == 303, response.text
    url = response.headers["Location"]
    phase, error = phase_and_error(hostile.wait_final(url))
    assert phase == "COMPLETED", error
    # cat $inputs (unquoted) read each upload as a file: no name became an option or code
    assert result(url, "all").content == b"".join(contents)
    job_id = url.rsplit("/", 1)[1]
    doc = etree.fromstring(requests.get(url, timeout=30).content)
    entities = [
        (p.text or "").removeprefix("opus:ent_")
        for p in doc.iter(f"{UWS}parameter")
        if p.get("id") == "inputs"
    ]
    assert len(entities) == len(names)
    for entity_id, content in zip(entities, contents, strict=True):
        served = requests.get(f"{hostile.url}/store/{entity_id}", timeout=30)
        assert served.status_code == 200 and served.content == content
        disposition = served.headers["Content-Disposition"]
        file_name = disposition.removeprefix('inline; filename="').removesuffix('"')
        assert file_name != disposition and re.fullmatch(SAFE_NAME, file_name), disposition
    # stored under the data dir by entity id, whatever the name said
    kept = {p.name for p in (hostile.data_dir / "uploads" / job_id).iterdir()}
    assert kept == set(entities)
    for folder in (base, hostile.data_dir, hostile.data_dir / "uploads"):
        assert not (folder / "escape.txt").exists() and not (folder / "escape2.txt").exists()
    assert sorted(markers.iterdir()) == []


PHASE_RUN = b'Content-Disposition: form-data; name="PHASE"'


def test_urls_with_shell_syntax_are_data(hostile: Server, markers: Path) -> None:
    marker = markers / "url"
    for url in (
        f"http://127.0.0.1:9/$(touch {marker})",
        f"http://127.0.0.1:9/a;touch%20{marker}|x`touch {marker}`",
        f"https://127.0.0.1:9/?q=';touch {marker};'&r=$(touch {marker})",
    ):
        response = requests.post(
            hostile.rest("opus_append"), data={"input": url, "PHASE": "RUN"}, allow_redirects=False
        )
        if response.status_code == 303:  # taken: it fails when the download does
            phase, _ = phase_and_error(hostile.wait_final(response.headers["Location"]))
            assert phase == "ERROR"
        else:
            assert_text_error(response, 400, "parameter input")
    assert sorted(markers.iterdir()) == []


# -- 2. paths that climb out, and links a job leaves in its folder ---------------------------


@pytest.fixture(scope="module")
def done_job(hostile: Server) -> str:
    url, doc = run(hostile, "hostile", text="kept")
    assert phase_and_error(doc)[0] == "COMPLETED"
    return url


TRAVERSALS = [
    "/jdl/..%2F..%2Fsetup.cfg",
    "/jdl/%2e%2e%2f%2e%2e%2fopus.sqlite",
    "/jdl/%2e%2e",
    "/jdl/%2Fetc%2Fpasswd",
    "/jdl/hostile%00.xml",
    "/jdl/..%5c..%5csetup.cfg",
    "/rest/%2e%2e",
    "/rest/..%2F..%2Fetc/x",
    "/rest/%2Fetc%2Fpasswd",
    "/rest/hostile%00",
    "/store/%2e%2e%2f%2e%2e%2fopus.sqlite",
    "/store/%2Fetc%2Fpasswd",
    "/store/..",
    "/store/%00",
    "{job}/results/%2e%2e%2f%2e%2e%2f%2e%2e%2fopus.sqlite",
    "{job}/results/..%2F..%2F..%2Fopus.sqlite",
    "{job}/results/%2Fetc%2Fpasswd",
    "{job}/results//etc/passwd",
    "{job}/results/out%00",
    "{job}/results/work%2Fout.txt",
    "{job}/parameters/..%2F..%2Fopus.sqlite",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_that_climb_out_serve_nothing(hostile: Server, done_job: str, target: str) -> None:
    path = target.replace("{job}", done_job.removeprefix(hostile.url))
    status, headers, body = raw_get(hostile, path)
    assert status in (400, 404), (status, body)
    assert any(h.lower().startswith(b"content-type: text/plain") for h in headers), headers
    assert b"root:" not in body and b"SQLite" not in body and b"Traceback" not in body
    assert body.strip() and body.count(b"\n") == 1, body


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("link", "points outside the job directory"),  # out.txt -> /etc/passwd
        ("dirlink", "points outside the job directory"),  # extra -> /etc, pattern extra/*
        ("inlink", "points outside the job directory"),  # extra/passwd.txt -> /etc/passwd
        ("badname", "is not printable"),  # a result named with a line break
    ],
)
def test_links_out_of_the_job_folder_are_refused(hostile: Server, mode: str, reason: str) -> None:
    url, doc = run(hostile, "hostile", mode=mode)
    phase, error = phase_and_error(doc)
    assert phase == "ERROR" and reason in error, error
    assert [r.get("id") for r in doc.iter(f"{UWS}result")] == []
    assert result(url, "out").status_code == 404
    for format_ in ("PROV-JSON", "PROV-XML"):  # the failed job's provenance still reads
        response = requests.get(f"{url}/provenance", params={"RESPONSEFORMAT": format_})
        assert response.status_code == 200 and b"root:" not in response.content


def test_a_result_replaced_by_a_link_later_is_not_served(hostile: Server) -> None:
    # The job leaves a process of its own session behind, which swaps out.txt for a link
    # to /etc/passwd once told to (by a file go), after the result was collected.
    url, doc = run(hostile, "hostile", mode="late", text="collected")
    assert phase_and_error(doc)[0] == "COMPLETED"
    assert result(url, "out").text == "collected\n"
    work = hostile.data_dir / "jobs" / url.rsplit("/", 1)[1] / "work"
    (work / "go").touch()
    link = work / "out.txt"
    end = time.monotonic() + 10
    while not link.is_symlink():
        assert time.monotonic() < end, "the job's process did not replace its result"
        time.sleep(0.1)
    response = result(url, "out")
    assert_text_error(response, 404, "replaced")
    entity = [r for r in doc.iter(f"{UWS}result") if r.get("id") == "out"]
    assert len(entity) == 1
    assert b"root:" not in response.content


# -- 3. markup and control characters: text in every document, or refused --------------------


def test_markup_in_values_comes_back_as_text_in_every_document(hostile: Server) -> None:
    url, doc = run(hostile, "hostile", text=MARKUP, RUNID=MARKUP)
    assert phase_and_error(doc)[0] == "COMPLETED"
    assert doc.findtext(f"{UWS}runId") == MARKUP
    values = {p.get("id"): p.text for p in doc.iter(f"{UWS}parameter")}
    assert values["text"] == MARKUP
    assert not {"script", "b"} & local_names(doc)
    parameters = etree.fromstring(requests.get(f"{url}/parameters", timeout=30).content)
    assert {p.get("id"): p.text for p in parameters.iter(f"{UWS}parameter")}["text"] == MARKUP
    assert requests.get(f"{url}/parameters/text", timeout=30).text == MARKUP
    assert result(url, "out").text == MARKUP + "\n"
    for format_ in ("PROV-XML", "PROV-VOTABLE"):
        response = requests.get(f"{url}/provenance", params={"RESPONSEFORMAT": format_})
        assert response.status_code == 200, response.text
        prov = etree.fromstring(response.content)
        assert not {"script", "b"} & local_names(prov), format_
        found = texts_of(prov)
        assert MARKUP in found, (format_, found)
        assert any(MARKUP in t for t in found if t != MARKUP), format_  # the run id, in the name
    response = requests.get(f"{url}/provenance", params={"RESPONSEFORMAT": "PROV-JSON"})
    assert response.headers["Content-Type"].startswith("application/json")
    assert MARKUP in set(strings_of(response.json()))
    provn = requests.get(f"{url}/provenance", params={"RESPONSEFORMAT": "PROV-N"})
    assert provn.status_code == 200 and "<script>" in provn.text  # plain text, not markup


def test_markup_in_a_definition_is_text_in_the_jdl(hostile: Server) -> None:
    listed = requests.get(f"{hostile.url}/jdl", timeout=30)
    assert listed.headers["Content-Type"].startswith("application/json")
    described = {d["name"]: d["description"] for d in listed.json()["jobdefs"]}
    assert "<script>alert(1)</script> ]]> \"quotes\" 'apostrophes'" in described["hostile"]
    body = requests.get(f"{hostile.url}/jdl/hostile/json", timeout=30).json()
    assert body["description"] == described["hostile"]
    assert {p["name"]: p["default"] for p in body["parameters"]}["text"] == '<b>"default"</b>'
    votable = etree.fromstring(requests.get(f"{hostile.url}/jdl/hostile", timeout=30).content)
    assert "script" not in local_names(votable)


def test_control_characters_on_stderr_still_make_readable_documents(hostile: Server) -> None:
    url, doc = run(hostile, "hostile", mode="stderr")
    phase, error = phase_and_error(doc)
    assert phase == "ERROR" and "exited with status 4" in error, error
    assert "<b>bold</b> ]]>" in error and "\x01" not in error and "\ufffd" in error
    assert requests.get(f"{url}/error", timeout=30).text == error
    for format_ in ("PROV-XML", "PROV-VOTABLE", "PROV-JSON", "PROV-N"):
        response = requests.get(f"{url}/provenance", params={"RESPONSEFORMAT": format_})
        assert response.status_code == 200, (format_, response.text)
        if format_ != "PROV-N":
            found = set(strings_of(response.json())) if format_ == "PROV-JSON" else None
            found = found or texts_of(etree.fromstring(response.content))
            assert any("<b>bold</b>" in t for t in found), format_


@pytest.mark.parametrize(
    "value", ["a\x01b", "\x1b[31mred", "tab\x0bvertical", "\ufffe", "\x7f\x00"]
)
def test_control_characters_xml_cannot_hold_are_400(hostile: Server, value: str) -> None:
    before = job_ids(hostile, "hostile")
    for field in ("text", "RUNID"):
        response = requests.post(
            hostile.rest("hostile"), data={field: value, "PHASE": "RUN"}, allow_redirects=False
        )
        assert_text_error(response, 400, f"parameter {field}")
    assert job_ids(hostile, "hostile") == before


# -- 4. bodies over the limit ----------------------------------------------------------------


def test_bodies_over_the_limit_are_413_and_store_nothing(hostile: Server) -> None:
    before_jobs, before_files = job_ids(hostile, "concat"), stored_files(hostile)
    big = b"x" * (3 * LIMIT)
    with_length = requests.post(
        hostile.rest("concat"),
        files={"inputs": ("big.txt", big)},
        data={"PHASE": "RUN"},
        allow_redirects=False,
        timeout=60,
    )
    assert_text_error(with_length, 413, str(LIMIT), "OPUS_MAX_UPLOAD_BYTES")
    body = multipart([file_part("inputs", b"big.txt", big), (PHASE_RUN, b"RUN")])

    def chunks(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    for payload, content_type in (
        (body, f"multipart/form-data; boundary={BOUNDARY}"),
        (b"inputs=" + big, "application/x-www-form-urlencoded"),
    ):
        chunked = requests.post(
            hostile.rest("concat"),
            data=chunks(payload),  # a generator: sent chunked, with no Content-Length
            headers={"Content-Type": content_type},
            allow_redirects=False,
            timeout=60,
        )
        assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
        assert_text_error(chunked, 413, str(LIMIT))
    assert job_ids(hostile, "concat") == before_jobs
    assert stored_files(hostile) == before_files
    # under the limit, chunked or not, the upload is taken whole
    small = b"y" * (LIMIT // 2)
    body = multipart([file_part("inputs", b"small.txt", small), (PHASE_RUN, b"RUN")])
    sent: list[bytes | Iterator[bytes]] = [body, chunks(body)]
    for data in sent:
        response = post_multipart(hostile, "concat", data)
        assert response.status_code == 303, response.text
        url = response.headers["Location"]
        assert phase_and_error(hostile.wait_final(url))[0] == "COMPLETED"
        assert result(url, "all").content == small


def test_a_parameter_put_over_64_kib_is_400(hostile: Server) -> None:
    url = hostile.create("hostile", run=False)
    response = requests.put(f"{url}/parameters/text", data=b"z" * 70_000, allow_redirects=False)
    assert_text_error(response, 400, "parameter text", "65536")
    assert requests.get(f"{url}/parameters/text", timeout=30).text == '<b>"default"</b>'


# -- 5. bodies, paths and queries that cannot be read ----------------------------------------

MALFORMED = [
    ("multipart/form-data", multipart([(b'Content-Disposition: form-data; name="x"', b"1")])),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([(b'Content-Disposition: form-data; name="x"', b"1")], "other-boundary"),
    ),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([file_part("inputs", b"a.txt", b"abc" * 1000)])[:1500],
    ),
    (f"multipart/form-data; boundary={BOUNDARY}", multipart([(b"Content-Type: text/plain", b"1")])),
    (f"multipart/form-data; boundary={BOUNDARY}", multipart([(b"no colon here", b"1")])),
    (f"multipart/form-data; boundary={BOUNDARY}", multipart([(b"", b"1")])),
    (f"multipart/form-data; boundary={BOUNDARY}", b"--" + BOUNDARY.encode() + b"\r\n"),
    (f"multipart/form-data; boundary={BOUNDARY}", b"no boundary at all"),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([(b'Content-Disposition: form-data; name="\xff\xfe"', b"1")]),
    ),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([(b'Content-Disposition: form-data; name="text"', b"\xff\xfe")]),
    ),
    ("multipart/form-data; boundary=", b"x"),
    ('multipart/form-data; boundary=""', b"x"),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([file_part("inputs", b"nul\x00byte.txt", b"x")]),
    ),
    (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([file_part("inputs", b"\xff\xfe.txt", b"x")]),
    ),
    ("application/x-www-form-urlencoded", b"%zz=%&&==&text=%ff"),
    ("application/x-www-form-urlencoded", b"text=\xff\xfe"),
    ("application/x-www-form-urlencoded", b"\xc3\x28=1"),
    ("text/plain", b"just some text"),
    ("application/json", b'{"text": "a"}'),
]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED)
def test_bodies_that_cannot_be_read_are_400(
    hostile: Server, content_type: str, body: bytes
) -> None:
    before = job_ids(hostile, "hostile")
    response = requests.post(
        hostile.rest("hostile"),
        data=body,
        headers={"Content-Type": content_type},
        allow_redirects=False,
        timeout=30,
    )
    assert_text_error(response, 400)
    assert job_ids(hostile, "hostile") == before


@pytest.mark.parametrize(
    "target",
    [
        "/rest/hostile/%ff%fe",
        "/rest/host%FFile",
        "/jdl/%c3%28",
        "/rest/hostile?PHASE=%ff",
        "/rest/hostile?%ff=1",
        "/rest/hostile?LAST=%C2%B2",
        "/provsap?ID=%ff",
        "/provsap?ID=x&DEPTH=%C2%B2",
    ],
)
def test_paths_and_queries_that_are_not_utf8_are_400(hostile: Server, target: str) -> None:
    status, _, body = raw_get(hostile, target)
    assert status == 400, (status, body)
    assert b"Traceback" not in body and body.count(b"\n") == 1


# -- 6. malformed definitions ----------------------------------------------------------------


def test_malformed_definitions_are_reported_and_never_served(hostile: Server) -> None:
    # the server started, with every good definition
    listing = requests.get(f"{hostile.url}/jdl", timeout=30).json()
    names = {d["name"] for d in listing["jobdefs"]}
    assert {"hostile", "hello", "failing", "concat"} <= names
    assert not {n for n in names if n.startswith("bad_")}
    reported = {p["file"]: p for p in listing["invalid"]}
    for file_name, (_, field, reason) in BAD_DEFINITIONS.items():
        problem = reported[file_name]
        assert problem["field"] == field, problem
        assert reason.lower() in problem["reason"].lower(), problem
    availability = requests.get(f"{hostile.url}/availability", timeout=30).text
    assert all(file_name in availability for file_name in BAD_DEFINITIONS)
    for name in ("bad_root", "bad_datatype", "bad_twice", "bad_default", "bad_bounds"):
        assert requests.get(f"{hostile.url}/jdl/{name}", timeout=30).status_code == 404
        assert requests.get(hostile.rest(name), timeout=30).status_code == 404


# -- 7. huge and negative numbers ------------------------------------------------------------


def test_huge_or_negative_wait_blocks_at_most_the_maximum(hostile: Server) -> None:
    url = hostile.create("hostile", run=False)  # PENDING: WAIT blocks

    def timed(wait: str) -> tuple[float, int, str]:
        started = time.monotonic()
        response = requests.get(url, params={"WAIT": wait}, timeout=MAX_WAIT + 30)
        phase = etree.fromstring(response.content).findtext(f"{UWS}phase") or ""
        return time.monotonic() - started, response.status_code, phase

    waits = ["99999999999999999999", "-5", "-1", str(2**63), "9" * 4000]
    with ThreadPoolExecutor(len(waits)) as pool:
        answers = list(pool.map(timed, waits))
    for wait, (elapsed, status, phase) in zip(waits, answers, strict=True):
        assert status == 200 and phase == "PENDING", wait
        assert MAX_WAIT - 0.5 < elapsed < MAX_WAIT + 5, (wait, elapsed)
    for wait in ("1e9", "-", "0x10", "1.0", ""):
        response = requests.get(url, params={"WAIT": wait}, timeout=30)
        assert_text_error(response, 400, "parameter WAIT")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("LAST=-1", "LAST"),
        ("LAST=1e9", "LAST"),
        ("LAST=99999999999999999999", "LAST"),
        ("LAST=" + "9" * 4000, "LAST"),
        ("AFTER=9999-99-99", "AFTER"),
        ("AFTER=9999-12-31T23:59:59-14:00", "AFTER"),
        ("AFTER=" + "9" * 4000, "AFTER"),
    ],
)
def test_out_of_range_list_filters_are_400(hostile: Server, query: str, name: str) -> None:
    response = requests.get(f"{hostile.rest('hostile')}?{query}", timeout=30)
    assert_text_error(response, 400, f"parameter {name}")


# -- 8. headers: nothing a client or a job names gets into one unescaped ---------------------


def test_run_id_with_line_breaks_stays_in_the_document(hostile: Server) -> None:
    run_id = "line\r\nX-Injected: 1\r\n\r\n<html>"
    host = f"{hostile.host}:{hostile.port}"
    form = f"RUNID={quote(run_id)}".encode()
    status, headers, _ = raw_http(
        hostile,
        f"POST /rest/hostile HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form,
    )
    assert status == 303
    assert not [h for h in headers if h.lower().startswith(b"x-injected")]
    location = next(h for h in headers if h.lower().startswith(b"location:")).split(b": ", 1)[1]
    status, headers, body = raw_get(hostile, location.decode().removeprefix(hostile.url))
    assert status == 200 and not [h for h in headers if h.lower().startswith(b"x-injected")]
    assert etree.fromstring(body).findtext(f"{UWS}runId") == run_id


ODD_NAMES = ['a"b.txt', "it's.txt", "<script>.txt", "é ü.txt", "semi;colon $(x).txt"]


def test_odd_result_names_are_served_with_a_safe_content_disposition(hostile: Server) -> None:
    _, doc = run(hostile, "hostile", mode="names")
    phase, error = phase_and_error(doc)
    assert phase == "COMPLETED", error
    results = {r.get("id"): r for r in doc.iter(f"{UWS}result")}
    assert set(results) == {"out", *(f"extra/{n}" for n in ODD_NAMES)}
    for name in ODD_NAMES:
        href = str(results[f"extra/{name}"].get("{http://www.w3.org/1999/xlink}href"))
        status, headers, body = raw_get(hostile, href.removeprefix(hostile.url))
        assert status == 200 and body.decode() == name + "\n", (name, status, body)
        assert not [h for h in headers if h.lower().startswith(b"x-injected")], headers
        disposition = next(
            h.decode() for h in headers if h.lower().startswith(b"content-disposition:")
        )
        fallback, _, encoded = disposition.partition("; filename*=UTF-8''")
        assert re.fullmatch(r'Content-Disposition: inline; filename="[A-Za-z0-9._-]+"', fallback)
        assert unquote(encoded) == name, disposition
    for header in ("X-Content-Type-Options: nosniff", "Content-Security-Policy: sandbox"):
        assert header.encode() in headers, headers
