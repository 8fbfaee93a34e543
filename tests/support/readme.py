"""The README's Python blocks, as a reader meets them (used by tests/project/test_readme.py).

Every fenced block whose language is ``python`` is collected in order with its line in the
file. A block that cannot run in the suite (it needs a cluster, a paid API, a database) is
marked, sparingly, by an HTML comment right before its fence, which GitHub does not show:

    <!-- not run: needs a Ray cluster -->
    ```python
    ...
    ```

The reason is required. Written here rather than with pytest-examples or
pytest-markdown-docs: those run each block as its own module (or chain blocks through
fence options a reader sees), while the README is read top to bottom, one block building on
the names of the ones before, and the run needs desic's fakes and a scratch folder around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["Block", "python_blocks"]

_NOT_RUN = re.compile(r"^<!--\s*not run\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$", re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One Python block: its source, its first line (1-based, the fence), and the reason it
    is not run (None when it runs)."""

    source: str
    line: int
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The file's ``python`` blocks in order; ``ValueError`` for a not-run mark without a
    reason or that precedes no Python block."""
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    blocks: list[Block] = []
    pending: tuple[str, int] | None = None  # a not-run mark waiting for its block
    for token in tokens:
        line = token.map[0] + 1 if token.map else 0
        if token.type == "html_block":
            found = _NOT_RUN.match(token.content.strip())
            if found:
                reason = (found.group("reason") or "").strip()
                if not reason:
                    raise ValueError(f"{path.name}:{line}: '<!-- not run -->' needs a reason: <!-- not run: why -->")
                pending = (reason, line)
                continue
        if token.type == "fence" and token.info.split()[:1] == ["python"]:
            blocks.append(Block(token.content, line, pending[0] if pending else None))
            pending = None
        elif pending is not None and token.type not in ("html_block",):
            raise ValueError(f"{path.name}:{pending[1]}: a not-run mark must come right before a ```python block")
    if pending is not None:
        raise ValueError(f"{path.name}:{pending[1]}: a not-run mark must come right before a ```python block")
    return blocks
