"""cffi builder (out-of-line API mode) for echo-open's extension modules.

Every declaration and every line of C lives in a header or a C file; this file
only says which goes into which module.

``echo_open._libbpf``
    The generic binding to libbpf (>= 1.1; the wheel bundles it): objects,
    programs, links, maps, ring buffers, as declared in ``csrc/libbpf.cdef.h``,
    plus ``csrc/loader_shim.c``: libbpf's va_list log callback formatted in C
    and handed to Python, and a ring-buffer callback that copies records into
    caller-owned batch buffers (one Python call per batch, never one per record).
``echo_open._layout``
    The structs of ``bpf/echo_open.h``, the header the BPF programs include:
    compiling this module checks every field offset against the C compiler.
``echo_open._render``
    ``csrc/render.c``: the CLI's table rows and JSON lines for a whole batch of
    records, formatted in C (``csrc/render.h`` says what it leaves to Python).
``echo_open._summary``
    ``csrc/summary.c``: the summary view's counters (per path, process, errno),
    fed whole batches of records in C (``csrc/summary.h``).

Usage::

    python build.py emit DIR      # write the modules' C sources into DIR (CMake does this)
    python build.py inplace       # compile them into python/echo_open/ (development)
"""

from __future__ import annotations

import pathlib
import re
import sys

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
BPF_DIR = ROOT / "bpf"
CSRC_DIR = ROOT / "csrc"

_TYPEDEFS = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t __s32;
typedef int64_t __s64;
"""


def header_cdef(path: pathlib.Path) -> str:
    """The header as cffi's cdef reads it: no include guard, defines expanded."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    defines: dict[str, str] = {}
    body = []
    for line in text.splitlines():
        match = re.match(r"\s*#\s*define\s+(\w+)\s+(\S.*)$", line)
        if match:
            defines[match.group(1)] = match.group(2).strip()
            body.append(line)
        elif not line.lstrip().startswith("#"):
            body.append(line)
    cdef = "\n".join(body)

    # cffi cannot size arrays by a #define: substitute the numbers (a dimension is a
    # number or one name #defined as a number)
    def expand(match: re.Match) -> str:
        size = match.group(1).strip()
        return f"[{int(defines.get(size, size), 0)}]"

    cdef = re.sub(r"\[([^\]]+)\]", expand, cdef)
    return _TYPEDEFS + cdef


# the stable ABI of CPython 3.10, as CMake's USE_SABI 3.10 builds the wheel's modules
# (cffi's C would otherwise define Py_LIMITED_API unversioned): one build for 3.10 and later
LIMITED_API = {"define_macros": [("Py_LIMITED_API", "0x030A0000")], "py_limited_api": True}


def libbpf_builder() -> FFI:
    ffi = FFI()
    ffi.cdef((CSRC_DIR / "libbpf.cdef.h").read_text() + header_cdef(CSRC_DIR / "loader_shim.h"))
    # one translation unit: the module's source includes the shim's
    ffi.set_source("echo_open._libbpf", '#include "loader_shim.c"\n', libraries=["bpf"],
                   include_dirs=[str(CSRC_DIR)], extra_compile_args=["-O2"], **LIMITED_API)
    return ffi


def layout_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(header_cdef(BPF_DIR / "echo_open.h"))
    ffi.set_source("echo_open._layout", '#include <linux/types.h>\n#include "echo_open.h"\n',
                   include_dirs=[str(BPF_DIR)], **LIMITED_API)
    return ffi


def render_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(header_cdef(CSRC_DIR / "render.h"))
    # one translation unit: the module's source includes the formatter's
    ffi.set_source("echo_open._render", '#include "render.c"\n',
                   include_dirs=[str(CSRC_DIR), str(BPF_DIR)], extra_compile_args=["-O2"],
                   **LIMITED_API)
    return ffi


def summary_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(header_cdef(CSRC_DIR / "summary.h"))
    ffi.set_source("echo_open._summary", '#include "summary.c"\n',
                   include_dirs=[str(CSRC_DIR), str(BPF_DIR)], extra_compile_args=["-O2"],
                   **LIMITED_API)
    return ffi


BUILDERS = {"_libbpf": libbpf_builder, "_layout": layout_builder, "_render": render_builder,
            "_summary": summary_builder}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "emit":
        out = pathlib.Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        for name, make in BUILDERS.items():
            make().emit_c_code(str(out / f"{name}.c"))
        return 0
    if argv == ["inplace"]:
        for make in BUILDERS.values():
            make().compile(tmpdir=str(ROOT / "python"), verbose=False)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
