"""Reading torch files a user can hand in without ever running code from them.

`torch.load(..., weights_only=True)` refuses pickled code, but its error text advises re-running with
`weights_only=False` — advice to unpickle an untrusted file. Every load of a user-reachable file goes through
`safe_load`, which keeps the refusal and replaces the advice with one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from archsearch.errors import ArchsearchError


class UnreadableFileError(ArchsearchError):
    """A file that is not the archsearch weights/checkpoint/cache file it was given as."""


# What torch.load raises for a foreign, truncated, damaged or code-carrying file.
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
               KeyError, IndexError, zipfile.BadZipFile, UnicodeDecodeError, OSError)


def safe_load(path: str | os.PathLike, what: str, **kwargs: Any) -> Any:
    """`torch.load(path, weights_only=True)` on CPU; any failure → `UnreadableFileError` "PATH: not an archsearch WHAT".

    `what` names the kind of file expected ("weights/checkpoint file", "decoded-data cache file"). The
    reason never quotes torch's text, which suggests `weights_only=False`.
    """
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ...": noise before the one line
            return torch.load(p, map_location="cpu", weights_only=True, **kwargs)
    except FileNotFoundError:
        raise UnreadableFileError(f"{p}: no such file") from None
    except PermissionError:
        raise UnreadableFileError(f"{p}: permission denied (cannot read the {what})") from None
    except LOAD_ERRORS as exc:
        why = "it holds code or objects other than tensors" if _refused_code(exc) else "damaged or another format"
        raise UnreadableFileError(f"{p}: not an archsearch {what} ({why}; nothing in it was run)") from None


def _refused_code(exc: BaseException) -> bool:
    return isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower()
