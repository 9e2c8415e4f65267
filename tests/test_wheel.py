"""The wheel that ships: one abi3 manylinux wheel with libbpf and libelf inside.

The wheel is the one ``./bootstrap.sh wheel`` builds (``packaging/build_wheel.py``): reused
from dist/ when it was built from the sources as they are now, else built once for the
session. Its contents are checked here, and it is installed into a fresh virtualenv of each
supported CPython, where it must run and trace with the system's libbpf and libelf, clang,
llvm and bpftool made unreachable (bind mounts in a private mount namespace).
"""

from __future__ import annotations

import base64
import csv
import glob
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "packaging" / "build_wheel.py"
PROBE = Path(__file__).resolve().parent / "wheel_probe.py"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
TAG = "cp310-abi3-manylinux_2_34_x86_64"
EM_BPF = 247
EXTENSIONS = ("_libbpf", "_layout", "_render", "_summary")
# what a manylinux wheel may still take from the system
SYSTEM_LIBRARIES = {"libc.so.6", "libz.so.1", "ld-linux-x86-64.so.2", "libm.so.6"}
# every CPython the abi3 wheel is for; CI's machine has them all: a missing one fails
INTERPRETERS = {
    "3.10": "/root/.pyenv/versions/3.10.13/bin/python",
    "3.11": "/root/.pyenv/versions/3.11.7/bin/python",
    "3.12": "/root/.pyenv/versions/3.12.1/bin/python",
    "3.13": "/root/.pyenv/versions/3.13.0/bin/python",
    "debian-3.11": "/usr/bin/python3",
}
MULTIARCH_LIB = Path("/usr/lib/x86_64-linux-gnu")
HIDDEN_TOOLS = ("clang", "llc", "llvm-strip", "bpftool")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/'s wheel if it is current, else one built now the way ./bootstrap.sh wheel does."""
    current = subprocess.run([sys.executable, str(BUILDER), "--current"],
                             capture_output=True, text=True, timeout=120)
    if current.returncode == 0:
        return Path(current.stdout.strip())
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, str(BUILDER), "--dist", str(dist)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


@pytest.fixture(scope="session")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


@pytest.fixture(scope="session")
def dist_info(unpacked: Path) -> Path:
    return unpacked / f"echo_open-{VERSION}.dist-info"


def dynamic(path: Path) -> tuple[list[str], list[str]]:
    """(DT_NEEDED, RPATH + RUNPATH) of a shared object."""
    with path.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".dynamic")
        assert isinstance(section, DynamicSection), f"{path} has no dynamic section"
        needed = [t.needed for t in section.iter_tags("DT_NEEDED")]
        paths = [t.rpath for t in section.iter_tags("DT_RPATH")]
        paths += [t.runpath for t in section.iter_tags("DT_RUNPATH")]
    return needed, paths


def test_the_wheel_is_abi3_and_manylinux(wheel: Path, dist_info: Path) -> None:
    assert wheel.name == f"echo_open-{VERSION}-{TAG}.whl"
    tags = (dist_info / "WHEEL").read_text().splitlines()
    assert f"Tag: {TAG}" in tags and "Root-Is-Purelib: false" in tags
    # auditwheel's own reading of the symbols and libraries agrees with the tag
    shown = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert 'consistent with the following platform tag: "manylinux_2_34_x86_64"' in \
        " ".join(shown.stdout.split())


def test_the_wheel_carries_the_bpf_object_and_abi3_extensions(unpacked: Path) -> None:
    package = unpacked / "echo_open"
    assert sorted(p.name for p in package.glob("*.so")) == \
        sorted(f"{name}.abi3.so" for name in EXTENSIONS)
    assert (package / "cli" / "__init__.py").is_file()
    assert (package / "loader" / "ringbuf.py").is_file()
    # the probe-read build and the direct-loads one (bpf_rdonly_cast, 6.2+)
    for name in ("echo_open.bpf.o", "echo_open_direct.bpf.o"):
        bpf_object = (package / "bpf" / name).read_bytes()
        # an ELF relocatable for the BPF machine, with BTF for CO-RE
        assert bpf_object[:4] == b"\x7fELF"
        assert int.from_bytes(bpf_object[18:20], "little") == EM_BPF
        assert b".BTF" in bpf_object


def test_libbpf_and_libelf_are_inside_and_nothing_else_comes_from_the_system(
        unpacked: Path) -> None:
    libs = unpacked / "echo_open.libs"
    bundled = {p.name for p in libs.iterdir()}
    assert any(re.fullmatch(r"libbpf-[0-9a-f]{8}\.so\.1(\.\d+)*", n) for n in bundled), bundled
    assert any(re.fullmatch(r"libelf-.*[0-9a-f]{8}.*\.so.*", n) for n in bundled), bundled

    for name in EXTENSIONS:
        needed, _ = dynamic(unpacked / "echo_open" / f"{name}.abi3.so")
        # without it auditwheel cannot tell the libc
        assert "libc.so.6" in needed, (name, needed)
    libbpf_needed, libbpf_paths = dynamic(unpacked / "echo_open" / "_libbpf.abi3.so")
    assert libbpf_paths == ["$ORIGIN/../echo_open.libs"]
    assert any(n.startswith("libbpf-") and n in bundled for n in libbpf_needed), libbpf_needed

    for so in [*unpacked.glob("echo_open/*.so"), *libs.iterdir()]:
        needed, _ = dynamic(so)
        outside = set(needed) - bundled - SYSTEM_LIBRARIES
        assert not outside, f"{so.name} needs {outside} from the system"
    bundled_libbpf = next(libs.glob("libbpf-*"))
    assert any(n.startswith("libelf-") and n in bundled for n in dynamic(bundled_libbpf)[0])


def test_the_licences_of_the_project_and_of_what_is_bundled_are_inside(
        unpacked: Path, dist_info: Path) -> None:
    licences = dist_info / "licenses"
    own = (licences / "LICENSE").read_text()
    assert "BSD 2-Clause License" in own and "echo-open authors" in own
    libbpf = (licences / "bundled" / "libbpf1.copyright").read_bytes()
    assert libbpf == Path("/usr/share/doc/libbpf1/copyright").read_bytes()
    assert b"LGPL-2.1 or BSD-2-Clause" in libbpf
    libelf = (licences / "bundled" / "libelf1.copyright").read_bytes()
    assert libelf == Path("/usr/share/doc/libelf1/copyright").read_bytes()
    # the index names every bundled library and the licence file that covers it
    index = (licences / "bundled" / "README").read_text()
    for lib in (unpacked / "echo_open.libs").iterdir():
        (line,) = [x for x in index.splitlines() if x.startswith(f"echo_open.libs/{lib.name}:")]
        covering = line.rsplit("licence: ", 1)[1]
        assert (licences / "bundled" / covering).is_file(), line

    metadata = (dist_info / "METADATA").read_text().partition("\n\n")[0].splitlines()
    assert "License-Expression: BSD-2-Clause" in metadata
    declared = {x.removeprefix("License-File: ") for x in metadata
                if x.startswith("License-File: ")}
    present = {str(p.relative_to(licences)) for p in licences.rglob("*") if p.is_file()}
    assert declared == present


def test_record_lists_every_file_with_its_hash(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        files = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    record_name = f"echo_open-{VERSION}.dist-info/RECORD"
    rows = list(csv.reader(io.StringIO(files[record_name].decode())))
    assert [record_name, "", ""] in rows
    listed = {row[0]: row[1:] for row in rows if row[0] != record_name}
    assert set(listed) == set(files) - {record_name}
    for name, (digest, size) in listed.items():
        expected = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert digest == f"sha256={expected.decode()}" and int(size) == len(files[name]), name


# ---- installed into a fresh virtualenv of each CPython, the system's libraries hidden ----

def run(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session", params=list(INTERPRETERS))
def venv(request: pytest.FixtureRequest, wheel: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv of one interpreter with only the wheel (and its PyPI dependencies)."""
    python = INTERPRETERS[request.param]
    assert os.access(python, os.X_OK), f"{python} is missing: the wheel is tested on every " \
                                       "CPython it is for"
    target = tmp_path_factory.mktemp(f"venv-{request.param}")
    made = run([python, "-m", "venv", str(target)])
    assert made.returncode == 0, made.stderr
    installed = run([str(target / "bin" / "python"), "-m", "pip", "install", "-q",
                     "--disable-pip-version-check", str(wheel)], timeout=600)
    assert installed.returncode == 0, installed.stderr
    version = run([str(target / "bin" / "python"), "-c",
                   "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    assert request.param.endswith(version)
    return target


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3.*/site-packages")
    return found


def hidden_files() -> list[str]:
    """The system's libbpf and libelf (real files: every symlink to them then reads empty)
    and bpftool; bind-mounting /dev/null over them makes them unreadable."""
    libraries = {os.path.realpath(p) for pattern in ("libbpf.so*", "libelf*.so*")
                 for p in glob.glob(str(MULTIARCH_LIB / pattern))}
    assert any("libbpf.so" in p for p in libraries), "no system libbpf to hide"
    assert any("libelf" in p for p in libraries), "no system libelf to hide"
    tools = {os.path.realpath(p) for p in ("/usr/sbin/bpftool", "/usr/bin/bpftool")
             if os.path.exists(p)}
    return sorted(libraries | tools)


def hidden_dirs() -> list[str]:
    """clang, llc and the llvm tools live here (/usr/bin only has symlinks into them)."""
    return sorted(glob.glob("/usr/lib/llvm-*"))


@pytest.fixture
def isolated(venv: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """isolated(argv) runs argv in a private mount namespace where the system's libbpf,
    libelf, clang, llvm and bpftool cannot be reached; the shell checks that first."""
    files, dirs = hidden_files(), hidden_dirs()
    script = ["set -e"]
    script += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    script += [f"mount -t tmpfs -o ro,size=16k eo-hidden {shlex.quote(d)}" for d in dirs]
    script += [f"if [ -s {shlex.quote(f)} ]; then echo 'still readable: {f}' >&2; exit 99; fi"
               for f in files]
    script += [f"if command -v {t} >/dev/null; then echo 'still on PATH: {t}' >&2; exit 99; fi"
               for t in HIDDEN_TOOLS]
    script.append('exec "$@"')
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}

    def run_isolated(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                    "\n".join(script), "sh", *argv], timeout=timeout, env=env)
        assert done.returncode != 99, done.stderr
        return done

    return run_isolated


def test_the_cli_starts(venv: Path, isolated) -> None:
    done = isolated([str(venv / "bin" / "echo-open"), "--help"])
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and "--json" in done.stdout


def test_the_cli_traces_a_command(venv: Path, isolated, tmp_path: Path) -> None:
    target = tmp_path / "opened-by-cat"
    target.write_text("")
    done = isolated([str(venv / "bin" / "echo-open"), "--json", "--", "cat", str(target)])
    assert done.returncode == 0, done.stderr
    assert "echo-open: tracing (" in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    hits = [e for e in events if e["path"] == str(target)]
    assert len(hits) == 1, done.stdout
    assert hits[0]["comm"] == "cat" and hits[0]["fd"] >= 0 and hits[0]["error"] is None


def test_the_api_traces_a_child_with_the_bundled_libbpf(venv: Path, isolated,
                                                        tmp_path: Path) -> None:
    target = tmp_path / "opened-by-child"
    target.write_text("")
    done = isolated([str(venv / "bin" / "python"), "-I", str(PROBE), str(target)])
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    site = site_packages(venv).resolve()
    libs = site / "echo_open.libs"

    assert Path(probe["echo_open"]).is_relative_to(site / "echo_open")
    assert probe["binding"] == str(site / "echo_open" / "_libbpf.abi3.so")
    # the libbpf and libelf mapped into the tracer are the wheel's
    assert any(Path(p).name.startswith("libbpf-") for p in probe["mapped"]), probe["mapped"]
    assert any(Path(p).name.startswith("libelf-") for p in probe["mapped"]), probe["mapped"]
    assert all(Path(p).resolve().parent == libs for p in probe["mapped"]), probe["mapped"]
    # and the dynamic linker resolves the extension's libbpf (and its libelf) there
    resolved = {name: Path(path).resolve() for name, path
                in re.findall(r"^\s*(\S+) => (\S+)", probe["ldd"], re.M)}
    assert any(n.startswith("libbpf-") for n in resolved), probe["ldd"]
    assert any(n.startswith("libelf-") for n in resolved), probe["ldd"]
    assert {resolved[n].parent for n in resolved if n.startswith(("libbpf", "libelf"))} \
        == {libs}, probe["ldd"]
    assert "not found" not in probe["ldd"]
    # the version libbpf itself reports is the bundled file's (libbpf-HASH.so.MAJOR.MINOR.x)
    (bundled,) = libs.glob("libbpf-*")
    major, minor = re.search(r"\.so\.(\d+)\.(\d+)", bundled.name).groups()
    assert probe["libbpf_version"] == [int(major), int(minor)]

    assert probe["child_status"] == 0
    opens = [e for e in probe["events"] if e["path"] == str(target)]
    assert len(opens) == 1, probe["events"]
    assert opens[0]["pid"] == probe["child_pid"]
    assert opens[0]["fd"] >= 0 and opens[0]["error"] is None
    # and the system's copy really was out of reach
    assert probe["system_libbpf"].startswith("OSError"), probe["system_libbpf"]


def test_version_and_doctor_name_the_bundled_libbpf(venv: Path, isolated) -> None:
    libs = site_packages(venv).resolve() / "echo_open.libs"
    (bundled,) = libs.glob("libbpf-*")
    version = isolated([str(venv / "bin" / "echo-open"), "--version"])
    assert version.returncode == 0, version.stderr
    patch = re.search(r"\.so\.(\d+\.\d+\.\d+)$", bundled.name).group(1)
    assert version.stdout.splitlines()[1] == f"libbpf {patch} (bundled: {bundled})"
    checked = isolated([str(venv / "bin" / "echo-open"), "doctor"], timeout=180)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"ok    libbpf: {patch} (bundled: {bundled})" in checked.stdout.splitlines()
