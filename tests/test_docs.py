"""
README.md stays a page, and every relative link in it and in docs/*.md leads somewhere:
to a file that exists and, for `#anchor`, to a heading of that file (GitHub's slugs).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 200
# `.ci/run` runs this line, and README names it as the test command.
TEST_COMMAND = "uv run pytest"

FENCE_RE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
# [text](target) or [text](target "title"); an image's ![alt](target) too.
INLINE_LINK_RE = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [ref]: target
REFERENCE_DEF_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING_RE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
EXTERNAL_RE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a shell block is no heading)."""
    return FENCE_RE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, punctuation other
    than `-` and `_` dropped, spaces turned into `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets `-1`, `-2`, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, heading in HEADING_RE.findall(prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    text = INLINE_CODE_RE.sub("", prose(path.read_text(encoding="utf-8")))
    targets = INLINE_LINK_RE.findall(text) + REFERENCE_DEF_RE.findall(text)
    return [target for target in targets if not EXTERNAL_RE.match(target)]


def broken(path: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``path``) leads nowhere, or None."""
    file_part, _, anchor = target.partition("#")
    linked = (path.parent / file_part).resolve() if file_part else path
    shown = linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked
    if not linked.exists():
        return f"{shown} does not exist"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"{shown} has no heading #{anchor}"
    return None


def test_readme_is_a_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to docs/"
    )


def test_readme_names_the_test_command():
    assert TEST_COMMAND in README.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("path", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    dead = [f"{target}: {why}" for target in relative_links(path) if (why := broken(path, target))]
    assert not dead, f"{path.relative_to(ROOT)} links to nothing: {dead}"


def test_the_link_check_finds_a_dead_file_and_a_dead_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A Mac's SSH session\n\n```sh\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-macs-ssh-session) [code](other.md#not-a-heading) [gone](missing.md)\n"
        "[self](#page) [web](https://example.org/x.md) `[in code](nowhere.md)`\n\n# Page\n"
    )
    assert relative_links(page) == ["other.md#a-macs-ssh-session", "other.md#not-a-heading", "missing.md", "#page"]
    assert broken(page, "other.md#a-macs-ssh-session") is None
    assert broken(page, "#page") is None
    assert "has no heading #not-a-heading" in broken(page, "other.md#not-a-heading")
    assert "does not exist" in broken(page, "missing.md")


def test_slugs_follow_github():
    assert slug("Start at boot: agent or daemon") == "start-at-boot-agent-or-daemon"
    assert slug("Caddy's release-file answers") == "caddys-release-file-answers"
    assert slug("`devpi_home`") == "devpi_home"
    assert slug("What the deploy does, and when") == "what-the-deploy-does-and-when"
