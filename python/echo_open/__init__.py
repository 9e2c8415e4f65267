"""echo-open: every file open on a Linux machine, as it happens, with eBPF.

The names below load on first use, so ``import echo_open.loader`` (the generic
BPF loader) does not import the open tracer.
"""

from __future__ import annotations

import importlib
import logging as _logging
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "OpenEvent": "events",
    "EnvironmentProblem": "system", "NoBTF": "system", "NoTracefs": "system",
    "NotPermitted": "system",
    "Summary": "summary",
    "Filters": "tracer", "InvalidSetting": "tracer", "Stats": "tracer", "Tracer": "tracer",
    "Tuning": "tracer",
}
__all__ = ["EnvironmentProblem", "Filters", "InvalidSetting", "NoBTF", "NoTracefs",
           "NotPermitted", "OpenEvent", "Stats", "Summary", "Tracer", "Tuning"]

if TYPE_CHECKING:
    from .events import OpenEvent
    from .summary import Summary
    from .system import EnvironmentProblem, NoBTF, NotPermitted, NoTracefs
    from .tracer import Filters, InvalidSetting, Stats, Tracer, Tuning


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echo_open' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


# a library logs; the application decides where it goes
_logging.getLogger("echo_open").addHandler(_logging.NullHandler())
