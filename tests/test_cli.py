"""The echo-open command, run as a user would run it."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Child

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
READY = "echo-open: tracing"


class Cli:
    """echo-open running in the background; lines read with a deadline."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, ECHO_OPEN, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._buffer = b""
        ready = self.proc.stderr.readline().decode()
        assert ready.startswith(READY), ready + self.proc.stderr.read().decode()

    def lines_until(self, done, timeout: float = 10.0) -> list[str]:
        """stdout lines until done(lines) holds."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not done(lines) and time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._buffer += chunk
            *complete, self._buffer = self._buffer.split(b"\n")
            lines.extend(line.decode("utf-8") for line in complete)
        return lines

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err.decode()


def _bpf_prog_ids_of(pid: int) -> set[int]:
    """The BPF programs a process holds, from its fds' fdinfo."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)", text, re.M))
    return ids


def _bpf_prog_ids() -> set[int]:
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], check=True,
                                      capture_output=True).stdout)
    return {p["id"] for p in shown}


def test_prints_a_childs_opens_and_stops_cleanly_on_sigint(tmp_path):
    (tmp_path / "seen").write_text("")
    child = Child(f"openat:.:{tmp_path}/seen", f"openat:.:{tmp_path}/missing")
    cli = Cli("-p", str(child.pid))
    progs = _bpf_prog_ids_of(cli.proc.pid)
    assert progs, "the CLI has BPF programs loaded while it runs"
    child.go()
    lines = cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= 2)
    status, err = cli.stop()
    assert status == 0
    assert lines[0].split() == ["PID", "TID", "COMM", "FD", "ERR", "PATH"]
    body = [line.split() for line in lines if str(tmp_path) in line]
    assert body[0][:3] == [str(child.pid), str(child.pid), child.name]
    assert int(body[0][3]) >= 0 and body[0][4] == f"{tmp_path}/seen"
    assert body[1][3:] == ["-1", "ENOENT", f"{tmp_path}/missing"]
    assert re.search(r"echo-open: \d+ events shown, \d+ filtered in the kernel, 0 lost", err)
    assert "Traceback" not in err
    assert not progs & _bpf_prog_ids(), "programs left in the kernel"


def test_sigterm_stops_cleanly(tmp_path):
    cli = Cli("-p", "1")
    progs = _bpf_prog_ids_of(cli.proc.pid)
    status, err = cli.stop(signal.SIGTERM)
    assert status == 0
    assert "events shown" in err and "Traceback" not in err
    assert not progs & _bpf_prog_ids()


def test_duration_ends_by_itself():
    started = time.monotonic()
    done = subprocess.run([ECHO_OPEN, "-d", "1", "-p", "1"], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr
    assert 1.0 <= time.monotonic() - started < 10
    assert "events shown" in done.stderr


def test_closed_stdout_ends_cleanly(tmp_path):
    # opens keep coming while `head` closes the pipe after three lines
    script = f"set -o pipefail; {ECHO_OPEN} -n eo-pipe | head -3"
    pipeline = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while pipeline.poll() is None and time.monotonic() < deadline:
        Child(*(f"openat:.:{tmp_path}/p{i}" for i in range(5)), name="eo-pipe").go()
    out, err = pipeline.communicate(timeout=20)
    assert pipeline.returncode == 0, err
    assert len(out.splitlines()) == 3
    assert "Traceback" not in err and "events shown" in err


def test_unprivileged_user_gets_exit_77_and_one_line():
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "--inh-caps=-all", ECHO_OPEN], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 77
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "CAP_BPF" in done.stderr


def test_kernel_without_btf_is_reported():
    # hide BTF in a private mount namespace
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount -t tmpfs none /sys/kernel/btf && exec {ECHO_OPEN}"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 78
    assert "BTF" in done.stderr and done.stderr.count("\n") == 1


def test_unmounted_tracefs_is_mounted():
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; "
              f"{ECHO_OPEN} -d 0.5 -p 1 && test -d /sys/kernel/tracing/events")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def test_tracefs_that_cannot_be_mounted_is_reported(perf_events_for_capabilities):
    # without CAP_SYS_ADMIN the tool may not mount tracefs itself
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; "
              f"exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {ECHO_OPEN}")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 72, done.stderr
    assert "tracefs" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(("args", "option"), [
    (["-p", "abc"], "-p"),
    (["-f", "O_BOGUS"], "-f"),
    (["-d", "-1"], "-d"),
    (["-u", "-5"], "-u"),
    (["--ring-size", "3M"], "--ring-size"),
    (["-n", "a-name-longer-than-15"], "-n"),
    (["-p", "2147483648"], "-p"),
    (["-t", "0"], "-t"),
    (["-u", "4294967295"], "-u"),
    (["-d", "nan"], "-d"),
    (["-d", "inf"], "-d"),
    (["-d", "1e20"], "-d"),
    (["-f"], "-f"),
    (["--jsn"], "--jsn"),
    (["doctor", "--bogus"], "--bogus"),
])
def test_bad_values_are_usage_errors_naming_the_option(args, option):
    done = subprocess.run([ECHO_OPEN, *args], capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert option in done.stderr
    # one line, not click's usage block and suggestions
    assert done.stderr.startswith("echo-open: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_help_shows_examples():
    done = subprocess.run([ECHO_OPEN, "--help"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    assert "Examples:" in done.stdout and "echo-open -x" in done.stdout


def test_extended_full_path_uid_and_time_columns(tmp_path):
    (tmp_path / "dir").mkdir()
    child = Child(f"chdir:{tmp_path}/dir", f"openat:.:rel:{os.O_WRONLY | os.O_CREAT}")
    cli = Cli("-p", str(child.pid), "-e", "-F", "-U", "-T")
    child.go()
    lines = cli.lines_until(lambda ls: any("rel" in line for line in ls))
    status, _ = cli.stop()
    assert status == 0
    assert lines[0].split() == ["TIME", "UID", "PID", "TID", "COMM", "FD", "ERR", "SYSCALL",
                                "FLAGS", "MODE", "PATH", "->", "RESOLVED"]
    fields = next(line for line in lines if "rel" in line).split()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6}", fields[0])
    assert fields[1] == "0"
    # ERR is empty for a successful open
    assert fields[6:] == ["openat", "O_WRONLY|O_CREAT", "000600", "rel", "->",
                          f"{tmp_path}/dir/rel"]


HOSTILE = ["new\nline", "carriage\rreturn", "tab\there", "clear\x1b[2Jscreen",
           "bell\x07", "back\\slash", "rtl\u202eexe.txt"]


def test_hostile_filenames_cannot_forge_or_hide_lines(tmp_path):
    actions = [f"openat:.:x{os.fsencode(str(tmp_path / name)).hex()}:{os.O_CREAT | os.O_WRONLY}"
               for name in HOSTILE]
    child = Child(*actions)
    cli = Cli("-p", str(child.pid))
    child.go()
    lines = cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= len(HOSTILE))
    cli.stop()
    shown = [line for line in lines if str(tmp_path) in line]
    assert len(shown) == len(HOSTILE)  # one line each: nothing split or merged
    joined = "\n".join(lines)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f\u202e]", joined)
    path_column = lines[0].index("PATH")
    paths = [line[path_column:] for line in shown]
    assert paths == [f"{tmp_path}/{name}" for name in [
        "new\\nline", "carriage\\rreturn", "tab\\there", "clear\\x1b[2Jscreen", "bell\\x07",
        "back\\\\slash", "rtl\\u202eexe.txt"]]


JSON_TYPES = {
    "ts_ns": int, "time": str, "latency_ns": int, "pid": int, "tid": int, "ppid": int,
    "uid": int, "gid": int, "mntns": int, "pidns": int, "netns": int, "userns": int,
    "nspid": int, "cgroup_id": int, "cgroup": (str, type(None)), "container": (str, type(None)),
    "comm": str, "comm_b64": (str, type(None)),
    "syscall": str, "dfd": int, "flags": int, "flags_text": str, "mode": int, "resolve": int,
    "ret": int, "fd": (int, type(None)), "errno": (int, type(None)),
    "error": (str, type(None)), "truncated": bool, "resolved_truncated": bool,
    "resolved_canonical": bool, "resolved_deleted": bool, "resolved_anonymous": bool,
    "resolved_unsure": bool, "resolved_mntns": int, "path": str, "path_b64": (str, type(None)),
    "resolved": (str, type(None)), "resolved_b64": (str, type(None)),
}


def test_json_lines_schema_and_lossless_paths(tmp_path):
    import base64

    weird = os.fsencode(str(tmp_path)) + b"/not-utf8-\xff\xfe-\n"
    child = Child(f"openat:.:x{weird.hex()}:{os.O_CREAT | os.O_WRONLY}",
                  f"openat:.:{tmp_path}/missing")
    cli = Cli("--json", "-p", str(child.pid))
    child.go()
    lines = cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= 2)
    status, _ = cli.stop()
    assert status == 0
    records = [json.loads(line) for line in lines]
    for record in records:
        assert list(record) == list(JSON_TYPES)
        for key, kind in JSON_TYPES.items():
            assert isinstance(record[key], kind), (key, record[key])
    created, missing = [r for r in records if str(tmp_path) in r["path"]]
    assert base64.b64decode(created["path_b64"]) == weird
    assert base64.b64decode(created["resolved_b64"]) == weird
    assert created["fd"] >= 0 and created["errno"] is None and created["error"] is None
    assert created["flags_text"] == "O_WRONLY|O_CREAT"
    assert created["pid"] == child.pid and created["comm"] == child.name
    assert created["syscall"] == "openat" and created["resolved_canonical"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["time"])
    assert missing["path"].encode() == os.fsencode(f"{tmp_path}/missing")
    assert missing["path_b64"] is None
    assert (missing["fd"], missing["errno"], missing["error"]) == (None, 2, "ENOENT")
    assert missing["ret"] == -2


def test_drops_are_reported_while_tracing_and_at_exit(tmp_path):
    count = 3000
    child = Child(*(f"openat:.:{tmp_path}/{'d' * 200}{i}" for i in range(count)))
    cli = Cli("-p", str(child.pid), "--ring-size", "64K")
    cli.proc.send_signal(signal.SIGSTOP)  # a consumer that cannot keep up
    try:
        child.go()
    finally:
        cli.proc.send_signal(signal.SIGCONT)
    lines = cli.lines_until(lambda ls: False, timeout=2.5)
    status, err = cli.stop()
    assert status == 0
    warning = re.search(r"warning: (\d+) events lost", err)
    assert warning and int(warning.group(1)) > 0
    summary = re.search(r"(\d+) events shown, \d+ filtered in the kernel, (\d+) lost", err)
    shown = sum(str(tmp_path) in line for line in lines)
    assert shown + int(summary.group(2)) == count


NOBODY_WITH = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def _caps(*caps: str) -> tuple[str, ...]:
    names = ",".join(f"+{cap}" for cap in caps)
    return (*NOBODY_WITH, f"--inh-caps={names}", f"--ambient-caps={names}")


def test_capabilities_instead_of_root(perf_events_for_capabilities):
    done = subprocess.run([*_caps("bpf", "perfmon", "dac_read_search"), ECHO_OPEN, "-d", "0.5",
                           "-p", "1"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert "events shown" in done.stderr


def test_capabilities_without_tracefs_access_are_one_line_and_exit_72(
        perf_events_for_capabilities):
    done = subprocess.run([*_caps("bpf", "perfmon"), ECHO_OPEN, "-d", "0.5"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 72
    assert done.stderr.count("\n") == 1 and "CAP_DAC_READ_SEARCH" in done.stderr


def test_interval_warnings_name_losses_and_unreadable_paths_apart(capsys):
    from echo_open.cli import _warn_drops
    from echo_open.tracer import Stats

    _warn_drops(Stats(ring_full=7, path_fault=1), Stats(ring_full=2))
    lost, unreadable = capsys.readouterr().err.splitlines()
    assert lost.startswith("echo-open: warning: 5 events lost") and "ring full 5" in lost
    assert unreadable == "echo-open: warning: 1 paths unreadable in the last interval"
    _warn_drops(Stats(path_fault=3), Stats(path_fault=3))
    assert capsys.readouterr().err == ""


def test_a_command_is_traced_with_every_process_it_starts_and_gives_its_status(tmp_path):
    script = (f"cat {tmp_path}/by-shell 2>/dev/null; "
              f"(sh -c 'cat {tmp_path}/by-grandchild' & wait) 2>/dev/null; "
              f"exec 3<{tmp_path}/opened; exit 3")
    (tmp_path / "opened").write_text("x")
    bystander = Child(f"openat:.:{tmp_path}/bystander")
    proc = subprocess.Popen([ECHO_OPEN, "--json", "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = proc.stderr.readline()
    assert ready.startswith(READY)
    bystander.go()  # opens while the command is traced: not part of its tree
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    records = [json.loads(line) for line in out.splitlines()]
    mine = {r["path"]: r for r in records if r["path"].startswith(str(tmp_path))}
    assert set(mine) == {f"{tmp_path}/by-shell", f"{tmp_path}/by-grandchild",
                         f"{tmp_path}/opened"}
    assert mine[f"{tmp_path}/by-grandchild"]["error"] == "ENOENT"
    assert mine[f"{tmp_path}/opened"]["fd"] == 3
    # three processes at least: the shell, its subshell, the grandchild's sh and cats
    assert len({r["pid"] for r in records}) >= 3
    assert bystander.proc.pid not in {r["pid"] for r in records}
    assert "lost" in err.splitlines()[-1]


def test_a_command_that_is_not_found_is_one_line_and_exit_127():
    done = subprocess.run([ECHO_OPEN, "--", "no-such-command-here"], capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 127
    assert done.stderr == "echo-open: command not found: no-such-command-here\n"
    assert done.stdout == ""


def test_a_command_with_a_pid_filter_is_a_usage_error():
    done = subprocess.run([ECHO_OPEN, "-p", "1", "--", "true"], capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 2
    assert "no -p/-t with it" in done.stderr


def test_a_closed_stdout_at_start_is_one_line_and_exit_74():
    done = subprocess.run([ECHO_OPEN, "-d", "1"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=20,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 74
    assert done.stderr == "echo-open: output error: standard output is closed\n"


def test_a_closed_stderr_keeps_status_lines_out_of_stdout():
    done = subprocess.run([ECHO_OPEN, "-d", "0.3", "-p", "4194303"], stdout=subprocess.PIPE,
                          timeout=20, preexec_fn=lambda: os.close(2))
    assert done.returncode == 0
    assert done.stdout.decode().splitlines() == [
        "PID     TID     COMM              FD ERR     PATH"]


def test_sigterm_with_a_command_passes_it_on_and_exits_with_its_status():
    cli = Cli("--", "sleep", "30")
    progs = _bpf_prog_ids_of(cli.proc.pid)
    assert progs
    started = time.monotonic()
    status, err = cli.stop(signal.SIGTERM)
    assert time.monotonic() - started < 10  # sleep was ended, not waited for
    assert status == 128 + signal.SIGTERM
    assert "events shown" in err and "Traceback" not in err
    assert not progs & _bpf_prog_ids(), "programs left in the kernel"


# ---- --version and subcommands


def _mapped_libbpf(pid: int) -> str:
    # the system's libbpf.so.1.x, or the wheel's echo_open.libs/libbpf-<hash>.so.1.x
    paths = {line.split()[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if len(line.split()) == 6
             and re.search(r"/libbpf(-[0-9a-f]+)?\.so", line.split()[5])}
    assert len(paths) == 1, paths
    return paths.pop()


def test_version_shows_echo_open_libbpf_kernel_and_object_without_privileges():
    import hashlib

    import echo_open
    from echo_open.tracer import default_object_path

    done = subprocess.run([*NOBODY_WITH, ECHO_OPEN, "--version"], capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    own, libbpf, kernel, bpf_object = done.stdout.splitlines()
    assert own == f"echo-open {echo_open.__version__}"
    # this process runs the same binding: the libbpf it maps is the one reported
    library = _mapped_libbpf(os.getpid())
    where = "bundled" if Path(library).parent.name == "echo_open.libs" else "system"
    assert re.fullmatch(rf"libbpf \d+\.\d+(\.\d+)? \({where}: {re.escape(library)}\)", libbpf)
    assert kernel == f"kernel {os.uname().release}"
    shipped = default_object_path()
    build_id = hashlib.sha256(shipped.read_bytes()).hexdigest()[:16]
    assert bpf_object == f"bpf object {build_id} ({shipped})"


def _package_with_a_broken_libbpf(tmp_path: Path) -> dict[str, str]:
    """A copy of the installed package whose libbpf has none of libbpf's symbols (as a
    too-old or broken install would be); the environment that imports that copy."""
    import echo_open

    site = Path(echo_open.__file__).parent.parent
    copy = tmp_path / "site"
    shutil.copytree(site / "echo_open", copy / "echo_open")
    (binding,) = (copy / "echo_open").glob("_libbpf*.so")
    needed = subprocess.run(["readelf", "-d", str(binding)], capture_output=True, text=True,
                            check=True).stdout
    (soname,) = re.findall(r"NEEDED.*\[(libbpf[^\]]*)\]", needed)
    (tmp_path / "empty.c").write_text("int not_libbpf;\n")
    fake = tmp_path / "lib" / soname
    if (site / "echo_open.libs").is_dir():  # the wheel's copy, found through the RPATH
        shutil.copytree(site / "echo_open.libs", copy / "echo_open.libs")
        fake = copy / "echo_open.libs" / soname
    fake.parent.mkdir(exist_ok=True)
    subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(fake),
                    str(tmp_path / "empty.c")], check=True)
    return {**os.environ, "PYTHONPATH": str(copy), "LD_LIBRARY_PATH": str(tmp_path / "lib")}


def test_version_says_when_libbpf_does_not_load(tmp_path):
    env = _package_with_a_broken_libbpf(tmp_path)
    done = subprocess.run([ECHO_OPEN, "--version"], capture_output=True, text=True,
                          timeout=20, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    libbpf = done.stdout.splitlines()[1]
    assert libbpf.startswith("libbpf: does not load: ") and "undefined symbol" in libbpf
    assert done.stdout.splitlines()[2] == f"kernel {os.uname().release}"
    # the tracer and doctor say so in one line too, with an exit status
    traced = subprocess.run([ECHO_OPEN, "-d", "0.1"], capture_output=True, text=True,
                            timeout=20, env=env)
    assert traced.returncode == 1 and traced.stderr.count("\n") == 1
    assert traced.stderr.startswith("echo-open: libbpf does not load: ")
    checked = subprocess.run([ECHO_OPEN, "doctor"], capture_output=True, text=True,
                             timeout=60, env=env)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stdout.startswith("FAIL  libbpf: the binding does not load: ")


def test_help_mentions_doctor_and_version():
    done = subprocess.run([ECHO_OPEN, "--help"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    assert "echo-open doctor" in done.stdout and "--version" in done.stdout


def test_shell_completion_completes_options_and_open_flag_names():
    def complete(*words: str) -> list[str]:
        env = dict(os.environ, _ECHO_OPEN_COMPLETE="complete_bash",
                   COMP_WORDS=" ".join(["echo-open", *words]), COMP_CWORD=str(len(words)))
        done = subprocess.run([ECHO_OPEN], env=env, capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("-f", "O_WR") == ["O_WRONLY"]
    assert complete("-f", "O_C") == ["O_CLOEXEC", "O_CREAT"]
    assert "--ring-size" in complete("--ring")
    script = subprocess.run([ECHO_OPEN, "--show-completion", "bash"], capture_output=True,
                            text=True, timeout=20)
    assert script.returncode == 0 and "_ECHO_OPEN_COMPLETE" in script.stdout


@pytest.mark.parametrize("content", [b"not a program\n", b"\x7fELF garbage"])
def test_a_command_that_cannot_be_executed_exits_126(tmp_path, content):
    command = tmp_path / "not-runnable"
    command.write_bytes(content)
    command.chmod(0o644)
    done = subprocess.run([ECHO_OPEN, "--", str(command)], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 126
    assert done.stderr == f"echo-open: permission denied (not executable): {command}\n"
    command.chmod(0o755)  # executable, but no format the kernel runs
    done = subprocess.run([ECHO_OPEN, "--", str(command)], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 126, done.stderr
    assert "Exec format error" in done.stderr and "Traceback" not in done.stderr


def test_the_command_gets_default_signal_dispositions():
    # Python ignores SIGPIPE and SIGXFSZ; a traced command must not inherit that
    script = 'grep -E "^Sig(Ign|Blk)" /proc/self/status; yes | head -1 >/dev/null; ' \
             'echo "yes: ${PIPESTATUS[0]}"'
    done = subprocess.run([ECHO_OPEN, "-n", "no-such-name", "--", "bash", "-c", script],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()[1:]  # after the table header
    assert lines == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000",
                     f"yes: {128 + signal.SIGPIPE}"]


def test_sigint_to_the_tracer_alone_ends_the_command_too():
    cli = Cli("--", "sleep", "30")
    started = time.monotonic()
    status, err = cli.stop(signal.SIGINT)  # to the tracer's pid only, not its group
    assert time.monotonic() - started < 15  # not the 30 s of sleep
    assert status == 128 + signal.SIGINT
    assert "events shown" in err and "Traceback" not in err


STORM = ("import os\n"
         "for i in range(400000):\n"
         "    try:\n"
         "        os.open('/nonexistent-eo-storm/' + str(i), os.O_RDONLY)\n"
         "    except OSError:\n"
         "        pass\n")


def _stalled_tracer(*args: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """echo-open tracing a storm of opens into a pipe nobody reads: its writes block."""
    tracer = subprocess.Popen([ECHO_OPEN, "-n", "eo-storm", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert tracer.stderr.readline().decode().startswith(READY)
    storm = subprocess.Popen([sys.executable, "-c",
                              "import ctypes; ctypes.CDLL(None).prctl(15, b'eo-storm');"
                              + STORM])
    # the pipe (64 KiB) fills: the tracer's writes block
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pipe_fill(tracer) < 60 << 10:
        time.sleep(0.05)
    assert _pipe_fill(tracer) >= 60 << 10
    return tracer, storm


def _pipe_fill(proc: subprocess.Popen) -> int:
    import fcntl
    import termios

    pending = bytearray(4)
    fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, pending)
    return int.from_bytes(pending, sys.byteorder)


@pytest.mark.parametrize("how", ["sigint", "duration"])
def test_a_stalled_reader_does_not_hold_the_tracer(how):
    tracer, storm = _stalled_tracer(*(["-d", "3"] if how == "duration" else []))
    try:
        progs = _bpf_prog_ids_of(tracer.pid)
        assert progs
        started = time.monotonic()
        # the grace (0.5 s) and detaching (~0.5 s here, several times that under qemu's
        # emulation); without the cut, the tracer would wait on the stalled pipe for good
        if how == "sigint":
            tracer.send_signal(signal.SIGINT)
            limit = 8.0
        else:
            limit = 3 + 8.0
        status = tracer.wait(timeout=30)
        elapsed = time.monotonic() - started
        err = tracer.stderr.read().decode()
    finally:
        storm.kill()
        storm.wait()
    assert status == 0, err
    assert elapsed < limit, f"exited {elapsed:.1f} s after the stop"
    assert "not shown" in err and "Traceback" not in err
    assert not progs & _bpf_prog_ids(), "programs left in the kernel"


def test_a_reader_that_goes_away_stops_the_tracer_without_a_write():
    # `echo-open -n zzqq | head -1`: nothing matches, so no write would fail
    tracer = subprocess.Popen([ECHO_OPEN, "-n", "zzqq-no-such"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert tracer.stderr.readline().decode().startswith(READY)
    progs = _bpf_prog_ids_of(tracer.pid)
    assert tracer.stdout.readline().startswith(b"PID")
    tracer.stdout.close()
    status = tracer.wait(timeout=10)
    assert status == 0
    assert "events shown" in tracer.stderr.read().decode()
    assert not progs & _bpf_prog_ids(), "programs left in the kernel"


def _with_tracepoints(events: list[str], command: str) -> subprocess.CompletedProcess[str]:
    """Run command where tracefs shows only these syscalls:* events (bound from a real
    tracefs into an empty one), in a private mount namespace."""
    real = "/run/eo-real-tracefs"
    lines = ["set -e", f"mkdir -p {real}", f"mount -t tracefs nodev {real}",
             "mount -t tmpfs eo-fake /sys/kernel/tracing",
             "mkdir -p /sys/kernel/tracing/events/syscalls",
             "umount /sys/kernel/debug 2>/dev/null || true"]
    for event in events:
        lines += [f"mkdir /sys/kernel/tracing/events/syscalls/{event}",
                  f"mount --bind {real}/events/syscalls/{event} "
                  f"/sys/kernel/tracing/events/syscalls/{event}"]
    lines.append(command)
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "\n".join(lines)], capture_output=True, text=True, timeout=30)


def test_no_open_tracepoint_at_all_is_exit_72_not_an_empty_trace():
    done = _with_tracepoints([], f"{ECHO_OPEN} -d 0.5")
    assert done.returncode == 72, done.stderr
    assert done.stderr.count("\n") == 1 and "nothing could be traced" in done.stderr


def test_missing_tracepoints_are_named_in_one_line_and_the_rest_traces(tmp_path):
    target = tmp_path / "seen"
    target.write_text("")
    done = _with_tracepoints(["sys_enter_openat", "sys_exit_openat"],
                             f"{ECHO_OPEN} --json -- cat {target}")
    assert done.returncode == 0, done.stderr
    assert "echo-open: tracing (2 tracepoints)" in done.stderr
    (missing,) = [line for line in done.stderr.splitlines() if "not traced" in line]
    assert missing.startswith("echo-open: not traced on this kernel: open opens (no "
                              "syscalls:sys_enter_open tracepoint); openat2 opens")
    assert "io_uring opens" in missing
    assert any(json.loads(line)["path"] == str(target) for line in done.stdout.splitlines())
