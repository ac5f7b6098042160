"""Golden files for parsers and renderers: compare, or rewrite on request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REGEN = os.environ.get("HARNESS_REGEN_GOLDEN") == "1"


def assert_golden(path: Path, text: str) -> None:
    """Compare `text` with the file; HARNESS_REGEN_GOLDEN=1 rewrites it instead."""
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path} is missing; run with HARNESS_REGEN_GOLDEN=1 to create it")
    assert text == path.read_text(encoding="utf-8"), (
        f"differs from {path} (HARNESS_REGEN_GOLDEN=1 to accept)"
    )
