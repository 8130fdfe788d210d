"""docs/architecture.md names every module of gateway/ in its layout, under its own package
(a pattern such as ``events*.py`` names several), so the map of the code cannot fall behind it."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def layout_entries() -> dict[str, str]:
    """Each entry of the layout's ``gateway/`` tree (``app.py``, ``proxy/``, ...) → its text,
    continuation lines included."""
    text = DOC.read_text(encoding="utf-8")
    tree = text[text.index("## Layout") :].split("```")[1]
    entries: dict[str, str] = {}
    current = None
    for line in tree.splitlines():
        entry = re.match(r"^  (\S+)", line)
        if entry:
            current = entry.group(1)
            entries[current] = line
        elif current is not None and line.startswith("    "):
            entries[current] += "\n" + line
        else:
            current = None
    return entries


def named(entry: str, module: str) -> bool:
    return any(fnmatch.fnmatch(module, p) for p in re.findall(r"[\w*]+\.py", entry))


def test_the_layout_was_read() -> None:
    entries = layout_entries()
    assert "app.py" in entries
    assert named(entries["proxy/"], "wire.py")
    assert named(entries["store/"], "events_redis.py")  # by events*.py
    assert not named(entries["store/"], "nowhere.py")


def test_every_module_is_named_in_the_layout() -> None:
    entries = layout_entries()
    missing = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(ROOT / "gateway").parts
        if len(parts) == 1:
            ok = parts[0] in entries or any(named(text, parts[0]) for text in entries.values())
        else:
            ok = named(entries.get(parts[0] + "/", ""), path.name)
        if not ok:
            missing.append("/".join(parts))
    assert not missing, f"docs/architecture.md's layout does not name {missing}"
