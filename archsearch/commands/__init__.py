"""One module per `archsearch` sub-command: `HELP`, `add_arguments(parser)` and `run(args) -> int` each."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts (trials, samples, classes, resamples): 0 or less is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type for a TCP port: a number in 1-65535 (Python's socket raises OverflowError past that)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value
