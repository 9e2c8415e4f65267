"""The suite on another kernel: tests/kernels/run boots Debian 12's stock kernel 6.1 under
qemu (software emulation) and runs the whole real-kernel suite inside it (all but this
file and USER_SPACE_ONLY); here we assert it passed. This is how CI covers 6.1: 20-30
minutes on 2 shared vCPUs, within CI's 90 (README, "On other kernels").
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "kernels" / "run"
# the guest's pytest arguments: the whole suite, failures summarised, but the files that
# test only user-space code (decoding, rendering, container ids from paths), which runs
# the same on any kernel and takes minutes under emulation
USER_SPACE_ONLY = ["test_render.py", "test_render_c.py", "test_fuzz.py", "test_containers.py"]
GUEST_ARGS = ["-q", "-rfE", *(f"--ignore={name}" for name in USER_SPACE_ONLY)]
GUEST_TIMEOUT_S = 3000


def guest_failures(output: str) -> str:
    """The start of pytest's failure report, then its short summary, as the guest printed."""
    failures = output.find("= FAILURES =")
    summary = output.find("short test summary info")
    head = output[failures:summary][:5000] if 0 <= failures < summary else ""
    return head + (output[summary:] if summary >= 0 else output[-3000:])


def run_guest(*pytest_args: str) -> tuple[int, str, str]:
    """tests/kernels/run 6.1 with these pytest arguments: (status, stdout, stderr). Past
    its time the runner is stopped with SIGTERM, which stops its guest too."""
    runner = subprocess.Popen([str(RUNNER), "6.1", *pytest_args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "EO_KERNEL_TIMEOUT": str(GUEST_TIMEOUT_S)})
    try:
        out, err = runner.communicate(timeout=GUEST_TIMEOUT_S + 300)
    except subprocess.TimeoutExpired:
        runner.terminate()
        out, err = runner.communicate(timeout=60)
    return runner.returncode, out, err


def test_the_suite_passes_on_debian_12s_kernel_6_1():
    status, out, err = run_guest(*GUEST_ARGS)
    kernel = re.search(r"^kernels/run: kernel=(\S+)", err, re.MULTILINE)
    assert kernel, f"the runner reported no kernel (status {status}):\n{err[-3000:]}\n" \
                   f"{out[-3000:]}"
    assert kernel.group(1).startswith("6.1."), f"the guest ran {kernel.group(1)}, not 6.1"
    assert status == 0, (f"pytest in the 6.1 guest ended with status {status}:\n"
                         f"{guest_failures(out)}\n{err[-2000:]}")
    summary = re.findall(r"^=* ?(\d+) passed", out, re.MULTILINE)
    assert summary and int(summary[-1]) > 0, out[-3000:]
