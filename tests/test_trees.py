"""-o FILE, -p PID --children and --wait-tree: real processes, real opens, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_cli import ECHO_OPEN, READY, Cli

from conftest import collect
from echo_open import Filters

# a process that waits for a line on stdin, then forks a child that opens argv[1]/late
# and itself opens argv[1]/parent; it started a child at once that opens argv[1]/early
# when told (SIGUSR1)
TREE = """
import os, signal, sys, time
folder = sys.argv[1]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])  # for sigwait
early = os.fork()
if early == 0:
    signal.sigwait([signal.SIGUSR1])
    open(folder + "/early", "w").close()
    os._exit(0)
print(early, flush=True)
sys.stdin.readline()
os.kill(early, signal.SIGUSR1)
late = os.fork()
if late == 0:
    open(folder + "/late", "w").close()
    os._exit(0)
open(folder + "/parent", "w").close()
os.waitpid(late, 0)
os.waitpid(early, 0)
"""


def _run(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([ECHO_OPEN, *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# ---- -o FILE

def test_output_file_keeps_the_trace_apart_from_the_commands_output(tmp_path):
    marker = tmp_path / "marker"
    trace = tmp_path / "trace.txt"
    done = _run("-o", str(trace), "--", "sh", "-c", f"echo said-by-command; : > {marker}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "said-by-command\n"  # the command's output alone
    lines = trace.read_text().splitlines()
    assert lines[0].split()[0] == "PID" and "COMM" in lines[0]
    assert any(line.endswith(str(marker)) and " sh " in f" {line} " for line in lines[1:])
    assert "said-by-command" not in trace.read_text()


def test_output_file_with_json_holds_one_object_per_line(tmp_path):
    marker = tmp_path / "marker"
    trace = tmp_path / "trace.jsonl"
    trace.write_text("old content that must go\n" * 100)  # truncated, not appended to
    done = _run("--json", "-o", str(trace), "--", "sh", "-c", f": > {marker}; echo out")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "out\n"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e for e in events if e["path"] == str(marker) and e["ret"] >= 0]
    assert "old content" not in trace.read_text()


def test_an_output_file_that_cannot_be_opened_is_exit_74_in_one_line(tmp_path):
    done = _run("-o", str(tmp_path / "no-such-folder" / "trace"), "--", "true")
    assert done.returncode == 74
    assert done.stderr.strip().splitlines() == [
        f"echo-open: output error: cannot open {tmp_path}/no-such-folder/trace: "
        "No such file or directory"]
    assert done.stdout == ""


def test_a_write_error_on_the_output_file_is_exit_74(tmp_path):
    # /dev/full refuses every write (ENOSPC): the first batch fails
    done = _run("-o", "/dev/full", "--", "sh", "-c", f": > {tmp_path}/a")
    assert done.returncode == 74, done.stderr
    assert "output error" in done.stderr and "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr


# ---- -p PID --children

def test_children_follows_a_pid_and_the_processes_it_has_and_starts(tmp_path):
    tree = subprocess.Popen([sys.executable, "-c", TREE, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    early_pid = int(tree.stdout.readline())
    cli = Cli("--json", "-p", str(tree.pid), "--children")
    try:
        tree.stdin.write("go\n")
        tree.stdin.flush()
        outsider = tmp_path / "outsider"
        subprocess.run(["sh", "-c", f": > {outsider}"], check=True)
        wanted = {str(tmp_path / n) for n in ("early", "late", "parent")}

        def seen(lines: list[str]) -> set[str]:
            return {json.loads(line)["path"] for line in lines} & (wanted | {str(outsider)})

        lines = cli.lines_until(lambda lines: seen(lines) >= wanted, timeout=20)
        tree.wait(timeout=10)
    finally:
        status, err = cli.stop()
    events = [json.loads(line) for line in lines]
    by_path = {e["path"]: e for e in events}
    assert seen(lines) == wanted, err  # the outsider is not in the tree
    assert by_path[str(tmp_path / "early")]["pid"] == early_pid  # started before tracing
    assert by_path[str(tmp_path / "parent")]["pid"] == tree.pid
    assert by_path[str(tmp_path / "late")]["pid"] not in (tree.pid, early_pid)
    assert status == 0, err


def test_the_api_follows_a_tree_and_lists_its_live_processes(start_tracer, tmp_path):
    tree = subprocess.Popen([sys.executable, "-c", TREE, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    early_pid = int(tree.stdout.readline())
    tracer = start_tracer(Filters(pids=[tree.pid], follow_children=True))
    assert tracer.followed_pids() == {tree.pid, early_pid}
    tree.stdin.write("go\n")
    tree.stdin.flush()
    tree.wait(timeout=10)
    names = {"early", "late", "parent"}
    events = collect(tracer, lambda e: Path(e.path).name in names and e.ret >= 0,
                     lambda evs: {Path(e.path).name for e in evs} >= names)
    assert {Path(e.path).name for e in events} == names
    # each left the kernel's filter as it exited
    deadline = time.monotonic() + 5
    while tracer.followed_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracer.followed_pids() == set()


# ---- --wait-tree

DAEMONISING = "( sleep 1.5; : > {late} ) & echo started"


def test_wait_tree_sees_a_grandchild_open_after_the_command_exited(tmp_path):
    late = tmp_path / "late"
    started = time.monotonic()
    done = _run("--json", "--wait-tree", "--", "sh", "-c", DAEMONISING.format(late=late))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e for e in events if e["path"] == str(late) and e["ret"] >= 0], done.stderr
    assert late.exists()
    assert elapsed >= 1.5  # it waited for the grandchild


def test_without_wait_tree_tracing_ends_with_the_command(tmp_path):
    late = tmp_path / "late"
    done = _run("--json", "--", "sh", "-c", DAEMONISING.format(late=late))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert not [e for e in events if e["path"] == str(late)]
    deadline = time.monotonic() + 10
    while not late.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert late.exists()  # the grandchild ran on, untraced


def test_wait_tree_exits_with_the_commands_status_and_ctrl_c_still_stops_it(tmp_path):
    done = _run("--wait-tree", "--", "sh", "-c", "exit 3")
    assert done.returncode == 3, done.stderr
    # a tree that would live for a minute: SIGINT ends the tracer
    proc = subprocess.Popen([ECHO_OPEN, "--wait-tree", "--", "sh", "-c",
                             "sleep 60 & exit 0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stderr.readline().decode().startswith(READY)
        time.sleep(1)
        assert proc.poll() is None  # COMMAND has exited; its sleep has not
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=15)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sleep
        proc.wait()
    assert status == 0
    assert "Traceback" not in proc.stderr.read().decode()


def test_wait_tree_with_children_ends_when_the_pid_and_its_tree_are_gone(tmp_path):
    tree = subprocess.Popen([sys.executable, "-c", TREE, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    tree.stdout.readline()
    proc = subprocess.Popen([ECHO_OPEN, "--json", "-p", str(tree.pid), "--children",
                             "--wait-tree"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr.readline().startswith(READY)
    tree.stdin.write("go\n")
    tree.stdin.flush()
    tree.wait(timeout=10)
    out, err = proc.communicate(timeout=20)  # ends by itself
    assert proc.returncode == 0, err
    paths = {Path(json.loads(line)["path"]).name for line in out.splitlines()}
    assert {"early", "late", "parent"} <= paths


def test_tree_options_without_a_tree_are_usage_errors():
    for args, option in ((["--children"], "--children"), (["--wait-tree"], "--wait-tree"),
                         (["-p", "1", "--wait-tree"], "--wait-tree")):
        done = _run(*args, timeout=15)
        assert done.returncode == 2, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and option in lines[0], done.stderr
