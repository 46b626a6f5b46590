"""Links and names in the documentation that cannot rot: README.md, docs/, data/README.md and the results
READMEs. Every relative link and image resolves (and its #anchor is a heading of the page it points at),
every ``make TARGET`` named exists in the Makefile, every ``tests/FILE.py::test_name`` cited exists, and
every ``configs/...`` path named exists. README's table of make targets equals ``make help``.

Pure text parsing, so it runs in well under a second; it fails on the first page that names something
gone, with the page and the name.
"""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

PAGES = sorted({REPO / "README.md", REPO / "data" / "README.md", *(REPO / "docs").glob("*.md"),
                *(p for p in (REPO / "results").glob("**/README.md") if "/runs-" not in str(p))})
PAGE_IDS = [str(p.relative_to(REPO)) for p in PAGES]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
MAKE = re.compile(r"(?:^|[\s;(])make\s+((?:[^\s;`]+\s+)*?)([a-z][a-z0-9_-]*)(?![-\w*=])", re.M)
TEST_REF = re.compile(r"\btests/([\w/]+\.py)((?:::\w+)*)")
CONFIG_REF = re.compile(r"\bconfigs/[\w./-]*[\w/]")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def code(text: str) -> list:
    """The code of a page: fenced blocks and inline code spans, where commands and paths are named."""
    return FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text))


def make_targets() -> set:
    return set(re.findall(r"^([a-zA-Z0-9_.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def broken_links(page: Path) -> list:
    bad = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
        elif REPO not in dest.parents and dest != REPO:
            bad.append(f"{target}: outside the repository")
    return bad


def unknown_names(page: Path) -> list:
    text, targets, bad = page.read_text(), make_targets(), []
    for snippet in code(text):
        for _, target in MAKE.findall(snippet):
            if target not in targets:
                bad.append(f"make {target}: no such target in the Makefile")
    for file, names in TEST_REF.findall(text):
        test_file = REPO / "tests" / file
        if not test_file.is_file():
            bad.append(f"tests/{file}: no such test file")
            continue
        source = test_file.read_text()
        for name in filter(None, names.split("::")):
            if not re.search(rf"^\s*(?:async\s+)?def {name}\(|^class {name}\b", source, re.M):
                bad.append(f"tests/{file}::{name}: no such test")
    for path in CONFIG_REF.findall(text):
        if re.search(r"[A-Z]{3,}", path):  # a placeholder: configs/variant/NAME.yaml
            continue
        if not (REPO / path).exists():
            bad.append(f"{path}: no such file or folder")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_make_target_test_and_config_named_exists(page):
    assert unknown_names(page) == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check on a page that breaks it, and the same page mended: the checks can fail."""
    page = REPO / "docs" / ".test-broken.md"
    try:
        page.write_text("# Here\n\n[ok](../README.md#make-targets) [self](#here) ![fig](../results/multi30k/demo/curves.png)\n"
                        "`make demo`, `tests/test_docs_links.py::test_the_checks_catch_what_they_are_for`, "
                        "`configs/experiment/demo.yaml`\n")
        assert broken_links(page) == [] and unknown_names(page) == []
        page.write_text("[gone](plugins.md) [anchor](../README.md#no-such-section) [here](#nowhere)\n"
                        "```bash\nmake demo-all EXPERIMENT=x\n```\n`tests/test_docs_links.py::test_gone`, "
                        "`tests/test_none.py`, `configs/experiment/nope.yaml`\n")
        assert len(broken_links(page)) == 3
        assert unknown_names(page) == ["make demo-all: no such target in the Makefile",
                                       "tests/test_docs_links.py::test_gone: no such test",
                                       "tests/test_none.py: no such test file",
                                       "configs/experiment/nope.yaml: no such file or folder"]
    finally:
        page.unlink()


def test_readme_make_targets_table_equals_make_help():
    """The README's table and `make help` both come from the Makefile's `##` comments; equal, row for row."""
    done = subprocess.run(["make", "--no-print-directory", "-s", "help"], cwd=REPO, capture_output=True, text=True,
                          check=True)
    helped = sorted(tuple(line.strip().split(None, 1)) for line in done.stdout.splitlines() if line.strip())
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `make ([a-z0-9_.-]+)` \| (.*) \|$", readme, re.M)
    assert len(helped) > 15
    assert sorted(rows) == helped
