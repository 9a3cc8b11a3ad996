"""Rewrite the README's config reference table from the Settings model (run after changing settings)."""

from __future__ import annotations

import re
from pathlib import Path

from twinfer.config import settings_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- config-reference:start (tools/readme_config.py rewrites this table) -->"
END = "<!-- config-reference:end -->"


def main() -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    README.write_text(pattern.sub(lambda _: f"{START}\n{settings_reference_markdown()}\n{END}", text))
    print(f"updated {README}")


if __name__ == "__main__":
    main()
