"""The documentation as a user reads it: every relative link and every cited repository path resolves,
and the README stays a short manual (≤ 200 lines; the reference is docs/cli.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "ARCHITECTURE.md", "CHANGELOG.md", *sorted(p.relative_to(ROOT).as_posix()
                                                             for p in (ROOT / "docs").glob("*.md")),
        "benchmarks/RESULTS.md", "figures/README.md"]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CITED_PATH = re.compile(r"`((?:linssl|tests|benchmarks|theory_checks|examples|docs|figures)/"
                        r"[\w./-]+\.(?:py|md|toml|png))(?:::\w+)?`")


def prose(text: str) -> str:
    """The text outside fenced code blocks (a link inside ``` is code, not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters of any script, digits,
    spaces, '-' and '_' kept), spaces to '-'."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a Markdown text; a repeated heading gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(doc: Path, text: str) -> list[str]:
    """Relative links of ``text`` (a file at ``doc``) whose file or heading anchor does not exist."""
    bad = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not this repository's files
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve()
        if path and not file.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and file.suffix in ("", ".md") and anchor not in anchors(file.read_text() if path else text):
            bad.append(f"{target} (no such heading)")
    return bad


def missing_cited_paths(text: str) -> list[str]:
    """Repository paths cited in backticks (`linssl/x.py`, `tests/t.py::name`) that do not exist."""
    return [p for p in CITED_PATH.findall(text) if not (ROOT / p).exists()]


@pytest.mark.parametrize("name", DOCS)
def test_every_relative_link_and_cited_path_resolves(name):
    doc = ROOT / name
    text = doc.read_text()
    assert broken_links(doc, text) == []
    assert missing_cited_paths(text) == []


def test_the_checks_catch_a_broken_link_a_wrong_anchor_and_a_gone_path():
    # a link to a missing file, an anchor no heading has, and a module that moved away must all be reported
    doc = ROOT / "README.md"
    text = ("# Title\n\n## `linssl simulate`\n\n[ok](docs/cli.md) [ok](#linssl-simulate) "
            "[gone](docs/nothing.md) [bad anchor](docs/cli.md#no-such-heading) [web](https://example.org)\n"
            "`linssl/deep/train.py` `linssl/theory.py`\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(doc, text) == ["docs/nothing.md (no such file)",
                                       "docs/cli.md#no-such-heading (no such heading)"]
    assert missing_cited_paths(text) == ["linssl/deep/train.py"]


def test_slug_follows_github():
    assert slug("`linssl deep-train`") == "linssl-deep-train"
    assert slug("Theory meets practice: does weight decay threshold features in practice?") == (
        "theory-meets-practice-does-weight-decay-threshold-features-in-practice")
    assert slug("4b. Scale, the η → 0 limit") == "4b-scale-the-η--0-limit"


def test_readme_is_a_short_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the reference belongs in docs/cli.md"
