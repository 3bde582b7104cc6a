"""The loader of host scripts kept as .sh files (pyinfra_devpi/shell_script.py)."""

from __future__ import annotations

import subprocess

import pytest

from pyinfra_devpi import shell_script

from .prepared import SHELLS


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "shared.sh").write_text(
        '# a shared function\n: "${greeting?}"\nsay_it() { printf \'%s, %s\\n\' "$greeting" "$1"; }\n'
    )
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "hello.sh").write_text(
        "# says hello\n"
        ': "${who?}" "${flag?}"\n'
        "\n"
        ". ../lib/shared.sh\n"
        "  # an indented comment\n"
        'say_it "$who"\n'
        'if [ -n "$flag" ]; then echo flagged; fi\n'
    )
    return tmp_path / "ops" / "module.py"


def test_values_are_assigned_quoted_before_the_static_body(scripts):
    text = shell_script.render(str(scripts), "hello", "a title", who="it's $(touch /x) me", flag=True,
                               greeting="hi")
    lines = text.splitlines()
    assert lines[0] == "# a title"
    assert lines[1:4] == ["who='it'\"'\"'s $(touch /x) me'", "flag=1", "greeting=hi"]
    # comments, blank lines and the declarations are left out; the include is inlined
    assert "#" not in "\n".join(lines[1:]) and ": \"${" not in text
    assert 'say_it() {' in text


@pytest.mark.parametrize("shell", SHELLS)
def test_the_rendered_script_runs_with_its_values_literally(shell, scripts):
    for flag, expected in ((True, "hi, $(x) `y`\nflagged\n"), (None, "hi, $(x) `y`\n"), (False, "hi, $(x) `y`\n")):
        text = shell_script.render(str(scripts), "hello", None, who="$(x) `y`", flag=flag, greeting="hi")
        result = subprocess.run([shell, "-c", text], capture_output=True, text=True, check=True)
        assert result.stdout == expected


def test_a_value_the_script_does_not_declare_or_a_missing_one_is_refused(scripts):
    with pytest.raises(ValueError, match="hello.sh"):
        shell_script.render(str(scripts), "hello", who="x", flag=1, greeting="hi", extra="y")
    with pytest.raises(ValueError, match="hello.sh"):
        shell_script.render(str(scripts), "hello", who="x", greeting="hi")


# A list input: its items one a line, read back with the pattern the facts' scripts use.
EACH = (
    ': "${items?}"\n'
    "n=0\n"
    "while IFS= read -r item; do\n"
    '  [ -n "$item" ] || continue\n'
    "  n=$((n + 1))\n"
    "  printf '<%s>\\n' \"$item\"\n"
    "done <<EOF\n"
    "$items\n"
    "EOF\n"
    "printf 'count=%s\\n' \"$n\"\n"
)
HOSTILE_ITEMS = [
    "/a path/with spaces",
    "  leading and trailing blanks  ",
    "it's \"quoted\"",
    "$(touch pwned-a)",
    "`touch pwned-b`",
    "${HOME} $HOME ~ ~/x",
    "back\\slash \\n \\",
    "; touch pwned-c; '",
    "* ? [a-z]",
    "-n",
    "EOF",
    "\ttab",
]


@pytest.fixture
def each(tmp_path):
    (tmp_path / "each.sh").write_text(EACH)
    return tmp_path / "module.py"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_list_arrives_item_by_item_literally(shell, each, tmp_path):
    for items in (HOSTILE_ITEMS, tuple(HOSTILE_ITEMS)):
        text = shell_script.render(str(each), "each", items=items)
        result = subprocess.run([shell, "-c", text], capture_output=True, text=True, check=True, cwd=tmp_path)
        # every item, whole and unchanged, and the loop ran in this shell (its count survives)
        assert result.stdout == "".join(f"<{item}>\n" for item in HOSTILE_ITEMS) + f"count={len(HOSTILE_ITEMS)}\n"
    assert sorted(tmp_path.glob("pwned-*")) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_an_empty_list_is_no_items(shell, each):
    for items in ((), [], [""]):
        text = shell_script.render(str(each), "each", items=items)
        result = subprocess.run([shell, "-c", text], capture_output=True, text=True, check=True)
        assert result.stdout == "count=0\n"


def test_an_item_holding_a_newline_is_refused_naming_the_input(each):
    with pytest.raises(ValueError, match=r"each\.sh: an item of the list items holds a newline"):
        shell_script.render(str(each), "each", items=["/ok", "two\nlines"])
