"""echo-open: every file open on a Linux machine, as it happens, with eBPF."""

from .events import OpenEvent
from .system import EnvironmentProblem, NoBTF, NotPermitted, NoTracefs
from .tracer import InvalidSetting, Stats, Tracer

__all__ = ["EnvironmentProblem", "InvalidSetting", "NoBTF", "NoTracefs", "NotPermitted",
           "OpenEvent", "Stats", "Tracer"]
__version__ = "0.1.0"

import logging as _logging

# a library logs; the application decides where it goes
_logging.getLogger("echo_open").addHandler(_logging.NullHandler())
