"""Log tails for failure reports."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<cannot read {path}: {error}>"
    return "\n".join(text.splitlines()[-lines:])


def collect_logs(dirs: Iterable[Path], files: Iterable[Path] = (), *, lines: int = 80, limit: int = 200_000) -> str:
    """Tails of every ``*.log`` under ``dirs`` plus ``files``, for a failure report."""
    seen: set[Path] = set()
    chunks: list[str] = []
    candidates: list[Path] = [Path(f) for f in files]
    for directory in dirs:
        directory = Path(directory)
        if directory.is_dir():
            candidates.extend(sorted(p for p in directory.rglob("*.log") if "site-packages" not in p.parts))
    total = 0
    for path in candidates:
        real = path.resolve()
        if real in seen or not path.is_file():
            continue
        seen.add(real)
        chunk = f"===== {path} (last {lines} lines) =====\n{tail(path, lines)}\n"
        total += len(chunk)
        if total > limit:
            chunks.append(f"===== (more logs left out; {limit} characters shown) =====\n")
            break
        chunks.append(chunk)
    return "".join(chunks)
