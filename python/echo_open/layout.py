"""echo_open.h as Python sees it: constants and struct formats read from the
compiled cffi module, never re-declared here."""

from __future__ import annotations

import struct

from echo_open._layout import ffi, lib

_FORMATS = {
    "uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "uint64_t": "Q",
    "int8_t": "b", "int16_t": "h", "int32_t": "i", "int64_t": "q",
}


def struct_format(ctype: str) -> tuple[struct.Struct, tuple[str, ...]]:
    """A little-endian struct.Struct for a C struct, and its field names in order.

    Padding becomes 'x' bytes; char[N] becomes 'Ns'; fields named pad* are skipped.
    """
    fmt = ["<"]
    names = []
    offset = 0
    for name, field in sorted(ffi.typeof(ctype).fields, key=lambda item: item[1].offset):
        if field.offset > offset:
            fmt.append(f"{field.offset - offset}x")
        size = ffi.sizeof(field.type)
        if name.startswith("pad"):
            fmt.append(f"{size}x")
        elif field.type.kind == "array" and field.type.item.cname == "char":
            fmt.append(f"{size}s")
            names.append(name)
        else:
            fmt.append(_FORMATS[field.type.cname])
            names.append(name)
        offset = field.offset + size
    total = ffi.sizeof(ctype)
    if total > offset:
        fmt.append(f"{total - offset}x")
    compiled = struct.Struct("".join(fmt))
    assert compiled.size == total, (ctype, compiled.size, total)
    return compiled, tuple(names)


EVENT_STRUCT, EVENT_FIELDS = struct_format("struct eo_event")
EVENT_SIZE = EVENT_STRUCT.size
EVENT_TS_OFFSET = ffi.offsetof("struct eo_event", "ts_ns")  # for a record's age
PATH_MAX = lib.EO_PATH_MAX
COMM_LEN = lib.EO_COMM_LEN
MAX_PREFIXES = lib.EO_MAX_PREFIXES
PREFIX_MAX = lib.EO_PREFIX_MAX
MAX_FILTER_IDS = lib.EO_MAX_FILTER_IDS
MAX_CGROUPS = lib.EO_MAX_CGROUPS
MAX_TAIL = lib.EO_MAX_TAIL  # what one record may carry after its header
DEFAULT_RING_SIZE = lib.EO_DEFAULT_RING_SIZE
MIN_RING_SIZE = lib.EO_MIN_RING_SIZE
MAX_RING_SIZE = lib.EO_MAX_RING_SIZE


def new_config():
    """A zeroed ``struct eo_config`` to fill in and write to .rodata.config."""
    return ffi.new("struct eo_config *")


def config_bytes(config) -> bytes:
    return ffi.buffer(config)[:]
