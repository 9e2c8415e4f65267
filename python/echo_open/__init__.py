"""echo-open: every file open on a Linux machine, as it happens, with eBPF."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .system import EnvironmentProblem, NoBTF, NotPermitted, NoTracefs

if TYPE_CHECKING:
    from .events import OpenEvent
    from .tracer import InvalidSetting, Stats, Tracer

__all__ = ["EnvironmentProblem", "InvalidSetting", "NoBTF", "NoTracefs", "NotPermitted",
           "OpenEvent", "Stats", "Tracer"]
__version__ = "0.1.0"

import logging as _logging

# a library logs; the application decides where it goes
_logging.getLogger("echo_open").addHandler(_logging.NullHandler())

# imported on first use: they need libbpf, and `echo-open --version` and `doctor` must
# still run (and say so) when it does not load
_LAZY = {"OpenEvent": "events", "InvalidSetting": "tracer", "Stats": "tracer",
         "Tracer": "tracer"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
