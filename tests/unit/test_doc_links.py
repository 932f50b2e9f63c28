"""Every link of the README and docs/*.md to a section or a file of this repository resolves.

The README cross-references its own sections by GitHub's heading anchors; a renamed heading silently breaks
them. Anchors follow GitHub's rule: the heading's rendered text, lower-cased, without characters other than
letters, digits, ``_``, ``-`` and spaces, spaces as ``-``, duplicates suffixed ``-1``, ``-2``; explicit
``<a id="...">`` tags count too. Lines inside fenced code blocks are not headings.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def github_slug(heading: str) -> str:
    text = _MD_LINK.sub(r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: Counter[str] = Counter()
    out: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        out.update(re.findall(r'<a id="([^"]+)"', line))
        m = None if fenced else re.match(r"#{1,6} (.+)", line)
        if m:
            slug = github_slug(m.group(1))
            out.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return frozenset(out)


def links(path: Path) -> list[str]:
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            out += [t for t in _LINK.findall(line) if not re.match(r"[a-z]+://|mailto:", t)]
    return out


def test_slug_rule():
    assert github_slug("The benchmark in the papers' regime (`data=synthetic_sensor_gap`, 1500 steps)") == (
        "the-benchmark-in-the-papers-regime-datasynthetic_sensor_gap-1500-steps"
    )
    assert github_slug("OMUDA's CAM: β on the dev split") == "omudas-cam-β-on-the-dev-split"
    assert github_slug("MIC's masking ratio: 0.5 [here](#x)") == "mics-masking-ratio-05-here"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc: Path):
    broken = []
    for target in links(doc):
        file_part, _, frag = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            broken.append(f"{target}: no heading or <a id> '{frag}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.name}: broken links (rename the link or the heading):\n" + "\n".join(broken)
