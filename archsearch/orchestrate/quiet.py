"""Ray's noise turned down: notices that come with every run and ask nothing of the user."""

from __future__ import annotations

import logging


def _not_token_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Token authentication is")


def quiet_token_notice() -> None:
    """Drop Ray's "Token authentication is enabled/disabled" notice (every run, nothing to act on).

    A logging filter, not RAY_AUTH_MODE: the authentication itself stays as Ray chooses it.
    """
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _not_token_notice not in log.filters:
        log.addFilter(_not_token_notice)
