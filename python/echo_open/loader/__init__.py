"""A generic loader for CO-RE BPF objects, over the system libbpf.

It knows nothing about what the programs trace::

    with BPFObject.open("prog.bpf.o") as obj:
        obj.map("events").max_entries = 1 << 22        # configure
        obj.program("optional_tp").autoload = False
        obj.load()                                      # LoadError carries the verifier log
        with obj.program("handler").attach():           # Link detaches on exit
            with RingBuffer(obj.map("events"), head_size=64, max_tail=4096) as ring:
                for head, tail in ring.poll(timeout=1.0):
                    ...
"""

from ._binding import libbpf_version, possible_cpus
from .errors import BPFError, LoadError, check
from .maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map
from .object import BPFObject, Link, Program
from .ringbuf import RecordBatch, RingBuffer

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "BPFError",
    "BPFObject",
    "Link",
    "LoadError",
    "Map",
    "Program",
    "RecordBatch",
    "RingBuffer",
    "check",
    "libbpf_version",
    "possible_cpus",
]
