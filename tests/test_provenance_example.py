"""The library used without the server: README's example runs as written, and every format
is written without prov's optional graph packages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import prov
import prov.model
import pytest

from provenance import capture
from tests.servers import ROOT

HEADING = "### Using the library without the server"


def readme_example() -> str:
    """The python code block of README's subsection on using the library alone."""
    text = (ROOT / "README.md").read_text()
    assert HEADING in text
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no python code block in the README subsection"
    return found.group(1)


def run_python(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` as a plain script in `folder`, with this work tree's packages first."""
    script = folder / "script.py"
    script.write_text(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_example_writes_valid_prov_n(tmp_path: Path) -> None:
    done = run_python(tmp_path, readme_example())
    assert done.returncode == 0, done.stderr
    written = list(tmp_path.glob("*.provn"))
    assert len(written) == 1, sorted(p.name for p in tmp_path.iterdir())

    doc = prov.read(str(written[0]), format="provn")
    assert isinstance(doc, prov.model.ProvDocument)
    activities = list(doc.get_records(prov.model.ProvActivity))
    assert len(activities) == 1
    activity = activities[0].identifier
    assert activity is not None and activity.namespace.prefix == "ex"
    entities = {record.identifier for record in doc.get_records(prov.model.ProvEntity)}

    def relations(kind: type[prov.model.ProvRecord]) -> list[dict[str, object]]:
        return [
            {str(key): value for key, value in record.formal_attributes}
            for record in doc.get_records(kind)
        ]

    used = [r for r in relations(prov.model.ProvUsage) if r["prov:activity"] == activity]
    generated = [r for r in relations(prov.model.ProvGeneration) if r["prov:activity"] == activity]
    assert len(used) == 1 and len(generated) == 1
    used_entity, generated_entity = used[0]["prov:entity"], generated[0]["prov:entity"]
    assert used_entity != generated_entity
    assert {used_entity, generated_entity} <= entities
    agents = list(doc.get_records(prov.model.ProvAgent))
    assert len(agents) == 1


WITHOUT_PROV_DOT = """
import sys

for name in ("pydot", "networkx"):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError

from provenance.document import Document
from provenance.serializers import FORMATS, serialize

doc = Document({"ex": "http://example.org/"})
doc.add("entity", "ex:data", {}, prov__label="data")
for name in FORMATS:
    serialize(doc, name)
assert "prov.dot" not in sys.modules
print("all formats")
"""


def test_every_format_is_written_without_pydot_or_networkx(tmp_path: Path) -> None:
    """PROV-SVG is drawn by dot from DOT text of our own: neither prov.dot nor its pydot
    and networkx are needed (nor installed by OPUS)."""
    if not shutil.which("dot"):
        pytest.skip("no dot (graphviz) on PATH")
    done = run_python(tmp_path, WITHOUT_PROV_DOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "all formats"


def test_context_container_comes_from_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_IMAGE_ID", "from-the-environment")
    assert capture.context("w").get("container") != "from-the-environment"
    assert capture.context("w", container="sha256:abc")["container"] == "sha256:abc"
    assert capture.context("w", container="") == capture.context("w", container=None)
