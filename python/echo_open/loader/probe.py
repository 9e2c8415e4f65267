"""What the running kernel's BPF supports, asked through libbpf's probe API.

Each probe loads a tiny program or creates a tiny map and frees it at once: it needs the
same privileges as loading a real object (CAP_BPF, or root). A probe that could not be
made (not permitted, ...) raises ``BPFError``; otherwise the answer is a bool.
"""

from __future__ import annotations

from ._binding import ffi, lib
from .errors import check

PROG_TYPE_TRACEPOINT = lib.BPF_PROG_TYPE_TRACEPOINT
PROG_TYPE_TRACING = lib.BPF_PROG_TYPE_TRACING
MAP_TYPE_RINGBUF = lib.BPF_MAP_TYPE_RINGBUF
MAP_TYPE_TASK_STORAGE = lib.BPF_MAP_TYPE_TASK_STORAGE
FUNC_LOOP = lib.BPF_FUNC_loop
FUNC_TASK_STORAGE_GET = lib.BPF_FUNC_task_storage_get


def _answer(ret: int, operation: str) -> bool:
    return check(ret, operation) == 1


def prog_type_supported(prog_type: int) -> bool:
    return _answer(lib.libbpf_probe_bpf_prog_type(prog_type, ffi.NULL),
                   f"libbpf_probe_bpf_prog_type({prog_type})")


def map_type_supported(map_type: int) -> bool:
    return _answer(lib.libbpf_probe_bpf_map_type(map_type, ffi.NULL),
                   f"libbpf_probe_bpf_map_type({map_type})")


def helper_supported(prog_type: int, helper_id: int) -> bool:
    """Whether a program of ``prog_type`` may call helper ``helper_id``."""
    return _answer(lib.libbpf_probe_bpf_helper(prog_type, helper_id, ffi.NULL),
                   f"libbpf_probe_bpf_helper({prog_type}, {helper_id})")


def libbpf_version_string() -> str:
    """libbpf's own version, e.g. ``v1.1`` (major.minor only)."""
    return ffi.string(lib.libbpf_version_string()).decode()
