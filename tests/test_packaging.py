"""The wheel carries the prebuilt BPF object and the compiled binding."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EM_BPF = 247


def test_wheel_carries_the_bpf_object_and_the_extensions(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=600)
    (wheel,) = tmp_path.glob("echo_open-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        bpf_object = archive.read("echo_open/bpf/echo_open.bpf.o")
    assert any(n.startswith("echo_open/_libbpf.") and n.endswith(".so") for n in names)
    assert any(n.startswith("echo_open/_layout.") and n.endswith(".so") for n in names)
    assert any(n.startswith("echo_open/_render.") and n.endswith(".so") for n in names)
    assert "echo_open/cli/__init__.py" in names and "echo_open/loader/ringbuf.py" in names
    # an ELF relocatable for the BPF machine, with BTF for CO-RE
    assert bpf_object[:4] == b"\x7fELF"
    assert int.from_bytes(bpf_object[18:20], "little") == EM_BPF
    assert b".BTF" in bpf_object
