"""The check every bad-input test shares: the CLI exits 2 with exactly one line on stderr and no traceback."""

from __future__ import annotations

import pytest

from archsearch.cli import main


def one_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one line on stderr, no traceback; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
