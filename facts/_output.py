"""Parsing helpers shared by the facts' pure ``process()`` functions."""

from __future__ import annotations


def key_values(output: list[str]) -> dict[str, str]:
    """``key=value`` lines as a dict (the first ``=`` splits; other lines are ignored)."""
    values = {}
    for line in output:
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


# Shell building blocks for fact commands (POSIX sh, BSD and GNU userlands alike).


def script(parts: list[str]) -> str:
    """The lines as one script that always exits 0 (pyinfra fails a fact that does not)."""
    return "\n".join([*parts, "true"])


def mode_of(path_expr: str) -> str:
    """A shell expression for the ``ls -l`` mode string of ``path_expr`` (a quoted shell word)."""
    return f"$(ls -ld {path_expr} 2>/dev/null | cut -c1-10)"


def print_block(path_expr: str, tag: str, missing: str | None = None) -> str:
    """Print the file as ``@<tag>`` / its lines / ``@end`` (or the ``missing`` line)."""
    otherwise = f"else echo {missing}; " if missing else ""
    return f'if [ -f {path_expr} ]; then echo "@{tag}"; cat {path_expr}; echo; echo "@end"; {otherwise}fi'


def split_blocks(output: list[str], tags: tuple[str, ...], what: str) -> tuple[list[str], dict[str, list[str]]]:
    """The lines outside ``@<tag>`` … ``@end`` blocks, and each block's lines by tag."""
    from pyinfra.api.exceptions import FactProcessError

    plain: list[str] = []
    blocks: dict[str, list[str]] = {}
    current = None
    for line in output:
        if current is None and line.startswith("@") and line[1:] in tags:
            current = line[1:]
            blocks[current] = []
        elif current is not None and line == "@end":
            current = None
        elif current is not None:
            blocks[current].append(line)
        else:
            plain.append(line)
    if current is not None:
        raise FactProcessError(f"{what}: unterminated @{current} block")
    return plain, blocks
