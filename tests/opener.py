"""A child process for the tests: names itself, waits for "go", makes the opens it was
told to make, reports each result as a JSON line, and exits.

    python opener.py NAME ACTION [ACTION ...]
      open:PATH[:FLAGS]           open(2) (FLAGS: int, default O_RDONLY)
      openat:DIR:PATH[:FLAGS]     openat(2) with a dirfd opened on DIR ("." = AT_FDCWD)
      openat2:PATH:FLAGS:RESOLVE  openat2(2) through syscall(2)
      creat:PATH[:MODE]           creat(2)
      byhandle:PATH               name_to_handle_at(2), then open_by_handle_at(2) of it
      chdir:DIR                   chdir(2)
      unlink:PATH                 unlink(2) (after an open: a deleted file)
Paths are hex-encoded when prefixed with "x", so any byte can be passed.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
SYS_open, SYS_openat, SYS_creat, SYS_openat2 = 2, 257, 85, 437  # x86_64
SYS_name_to_handle_at, SYS_open_by_handle_at = 303, 304
MAX_HANDLE_SZ = 128
AT_FDCWD = -100


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def arg_path(text: str) -> bytes:
    return bytes.fromhex(text[1:]) if text.startswith("x") else os.fsencode(text)


def syscall(number: int, *args) -> tuple[int, int]:
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(number, *args)
    return (ret, 0) if ret >= 0 else (-1, ctypes.get_errno())


def open_by_handle(path: bytes) -> tuple[int, int]:
    """A file handle for path, opened again through a directory on the same mount."""
    handle = ctypes.create_string_buffer(8 + MAX_HANDLE_SZ)
    ctypes.c_uint.from_buffer(handle).value = MAX_HANDLE_SZ  # handle_bytes
    mount_id = ctypes.c_int()
    ret, err = syscall(SYS_name_to_handle_at, AT_FDCWD, ctypes.c_char_p(path), handle,
                       ctypes.byref(mount_id), 0)
    if ret < 0:
        return ret, err
    mount_fd = os.open(os.path.dirname(path) or b".", os.O_RDONLY | os.O_DIRECTORY)
    return syscall(SYS_open_by_handle_at, mount_fd, handle, os.O_RDONLY)


def run(action: str) -> dict:
    kind, _, rest = action.partition(":")
    parts = rest.split(":")
    if kind == "open":
        flags = int(parts[1], 0) if len(parts) > 1 else 0
        ret, err = syscall(SYS_open, ctypes.c_char_p(arg_path(parts[0])), flags, 0o644)
    elif kind == "openat":
        dirfd = AT_FDCWD if parts[0] == "." else os.open(arg_path(parts[0]), os.O_RDONLY)
        flags = int(parts[2], 0) if len(parts) > 2 else 0
        ret, err = syscall(SYS_openat, dirfd, ctypes.c_char_p(arg_path(parts[1])), flags, 0o600)
        return {"action": action, "ret": ret, "errno": err, "dirfd": dirfd}
    elif kind == "openat2":
        how = OpenHow(int(parts[1], 0), 0, int(parts[2], 0))
        ret, err = syscall(SYS_openat2, AT_FDCWD, ctypes.c_char_p(arg_path(parts[0])),
                           ctypes.byref(how), ctypes.sizeof(how))
    elif kind == "creat":
        mode = int(parts[1], 0) if len(parts) > 1 else 0o640
        ret, err = syscall(SYS_creat, ctypes.c_char_p(arg_path(parts[0])), mode)
    elif kind == "byhandle":
        ret, err = open_by_handle(arg_path(parts[0]))
        return {"action": action, "ret": ret, "errno": err}
    elif kind == "chdir":
        os.chdir(arg_path(parts[0]))
        ret, err = 0, 0
    elif kind == "unlink":
        os.unlink(arg_path(parts[0]))
        ret, err = 0, 0
    else:
        raise SystemExit(f"unknown action {action}")
    return {"action": action, "ret": ret, "errno": err}


def main() -> None:
    name = sys.argv[1].encode()[:15]
    libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME: our comm
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return
    for action in sys.argv[2:]:
        sys.stdout.write(json.dumps(run(action)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
