"""A correctness oracle: the same workload run under echo-open and under strace must give
the same opens, and echo-open's resolved paths must be what os.path.realpath said.

The workload (a ``python -c``) opens a known list of paths through dirfds, symlinks, '..',
a changed cwd, missing files and refused flags; for each it records the result and
``os.path.realpath`` of the path at that moment. It runs once under
``echo-open --json -F -- python ...`` and once under
``strace -f -e trace=open,openat,openat2,creat``: every (syscall path, result) pair of the
whole run, the interpreter's own start-up opens included, must be the same in both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")

WORKLOAD = textwrap.dedent(r"""
    import errno, json, os, sys
    root = sys.argv[1]
    os.chdir(root)
    os.mkdir("d"); os.mkdir("d/sub"); os.mkdir("other")
    with open("d/f", "w") as f: f.write("f")
    with open("other/g", "w") as f: f.write("g")
    os.symlink("d/f", "link")                 # to a file
    os.symlink("d", "dlink")                  # to a directory
    os.symlink(root + "/other", "abslink")    # absolute, to a directory
    os.symlink("nowhere", "dangling")
    d_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
    sub_fd = os.open("d/sub", os.O_RDONLY | os.O_DIRECTORY)
    print("opens start", file=sys.stderr, flush=True)
    cases = [  # (dir_fd or None, path, flags, symlink in the path)
        (None, "d/f", os.O_RDONLY, False),
        (None, root + "/d/f", os.O_RDONLY, False),
        (None, "link", os.O_RDONLY, True),
        (None, "dlink/f", os.O_RDONLY, True),
        (None, "dlink/../other/g", os.O_RDONLY, True),  # '..' of the symlink's target
        (None, "d/sub/../f", os.O_RDONLY, False),
        (None, "abslink/g", os.O_RDONLY, True),
        (None, "abslink/../d/f", os.O_RDONLY, True),
        (None, "missing", os.O_RDONLY, False),
        (None, "d/missing", os.O_RDONLY, False),
        (None, "d/sub/../../missing", os.O_RDONLY, False),
        (None, "dangling", os.O_RDONLY, True),
        (None, "link", os.O_RDONLY | os.O_NOFOLLOW, True),      # ELOOP
        (None, "d/f", os.O_RDONLY | os.O_DIRECTORY, False),     # ENOTDIR
        (None, "d", os.O_WRONLY, False),                        # EISDIR
        (None, "d/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, False),
        (None, "d/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, False),  # EEXIST
        (d_fd, "f", os.O_RDONLY, False),
        (d_fd, "sub/../f", os.O_RDONLY, False),
        (d_fd, "../other/g", os.O_RDONLY, False),
        (d_fd, "../link", os.O_RDONLY, True),
        (d_fd, "nothing", os.O_RDONLY, False),
        (sub_fd, "..", os.O_RDONLY | os.O_DIRECTORY, False),
        (sub_fd, "../../abslink/g", os.O_RDONLY, True),
        (sub_fd, "../sub/../../missing", os.O_RDONLY, False),
        (None, ".", os.O_RDONLY | os.O_DIRECTORY, False),
        (None, "/", os.O_RDONLY | os.O_DIRECTORY, False),
    ]
    records = []
    for index, (dir_fd, path, flags, via_symlink) in enumerate(cases):
        if index == len(cases) - 6:
            os.chdir("d/sub")  # the rest of the AT_FDCWD cases from another cwd
        if index >= len(cases) - 6 and dir_fd is None and not path.startswith("/"):
            path = "../../" + path
        base = os.path.realpath(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.getcwd()
        real = os.path.realpath(os.path.join(base, path))
        try:
            fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
            result = "ok"
            os.close(fd)
        except OSError as exc:
            result = errno.errorcode[exc.errno]
        records.append({"path": path, "result": result, "realpath": real,
                        "via_symlink": via_symlink})
    print(json.dumps(records))
    """)


def _prepare(root: Path) -> list[str]:
    root.mkdir()
    # -I -B: no user site, no environment, no .pyc writes: the same opens in both runs
    return [sys.executable, "-I", "-B", "-c", WORKLOAD, str(root)]


def _strace_opens(log: Path) -> list[tuple[str, str]]:
    """(path, result) of every open strace logged: 'ok' or the errno name."""
    line_re = re.compile(r'^\d+\s+(open|openat|openat2|creat)\((?:[^,]+, )?"((?:[^"\\]|\\.)*)"'
                         r'.*\)\s+=\s+(-?\d+)(?:\s+(E[A-Z0-9]+))?')
    opens = []
    for line in log.read_text().splitlines():
        if match := line_re.match(line):
            _, path, ret, error = match.groups()
            opens.append((path.encode().decode("unicode_escape"),
                          "ok" if int(ret) >= 0 else error))
        else:
            assert "open" not in line.split("(")[0] or "resumed" in line, line
    return opens


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (./bootstrap.sh test installs it)")
    base = tmp_path_factory.mktemp("oracle")
    # under echo-open
    command = _prepare(base / "traced")
    traced = subprocess.run([ECHO_OPEN, "--json", "-F", "--", *command], capture_output=True,
                            text=True, timeout=120)
    assert traced.returncode == 0, traced.stderr
    events, records = [], None
    for line in traced.stdout.splitlines():
        if line.startswith('{"ts_ns"'):
            events.append(json.loads(line))
        else:
            records = json.loads(line)
    # under strace, in a tree of the same shape, at the same depth
    command = _prepare(base / "stracd")
    log = base / "strace.log"
    straced = subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,creat",
                              "-o", str(log), *command], capture_output=True, text=True,
                             timeout=120)
    assert straced.returncode == 0, straced.stderr
    return {"events": sorted(events, key=lambda e: e["ts_ns"]), "records": records,
            "strace": _strace_opens(log), "traced_root": str(base / "traced"),
            "strace_root": str(base / "stracd"), "straced_records": json.loads(straced.stdout)}


def test_every_open_and_its_result_is_what_strace_saw(runs):
    def neutral(path: str, root: str) -> str:
        return path.replace(root, "ROOT")

    ours = [(neutral(e["path"], runs["traced_root"]), "ok" if e["ret"] >= 0 else e["error"])
            for e in runs["events"]]
    theirs = [(neutral(path, runs["strace_root"]), result) for path, result in runs["strace"]]
    assert len(theirs) > 50  # the interpreter's start-up, then the workload
    assert ours == theirs
    # and the workload's own record of what each open returned agrees with both
    workload = [(neutral(r["path"], runs["traced_root"]), r["result"]) for r in runs["records"]]
    assert workload == [(neutral(r["path"], runs["strace_root"]), r["result"])
                        for r in runs["straced_records"]]
    assert ours[-len(workload):] == workload  # its opens end the trace, in order


def test_resolved_is_what_realpath_said_at_the_time(runs):
    events = runs["events"]
    records = runs["records"]
    # the workload's opens are the last len(records) opens of the run, in order
    mine = events[-len(records):]
    assert [e["path"] for e in mine] == [r["path"] for r in records]
    checked = 0
    for event, record in zip(mine, records, strict=True):
        if record["result"] == "ok":
            # the opened file itself: symlinks, '..', the dirfd and the cwd all settled
            assert event["resolved_canonical"], event
            assert event["resolved"] == record["realpath"], (record, event["resolved"])
            checked += 1
        elif not record["via_symlink"]:
            # a failed open is joined and normalised lexically: the same where no symlink
            # lies on the way
            assert not event["resolved_canonical"]
            assert event["resolved"] == record["realpath"], (record, event["resolved"])
            checked += 1
        assert not event["resolved_unsure"]  # one thread: nothing could race
    assert checked >= 20
