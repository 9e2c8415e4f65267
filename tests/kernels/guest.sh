# Runs inside the guest (copied into the result folder by tests/kernels/run): the real-kernel
# tests of the worktree in /run/eo-out/worktree, with the pytest arguments in /run/eo-out/args
# (NUL-separated). Exit status: pytest's.
set -u
out=/run/eo-out
cut -d' ' -f1 /proc/uptime > $out/booted
uname -r > $out/release
worktree=$(cat $out/worktree)
export TMPDIR=/tmp                     # a plain tmpfs (see init)
export PYTHONDONTWRITEBYTECODE=1       # the overlay is thrown away anyway
export PYTHONUNBUFFERED=1              # progress on the console as it happens
export EO_CURRENT_TEST_FILE=$out/current  # conftest.py: the test under way
mapfile -d '' args < $out/args
# loopback for the tests that listen (--metrics, a Prometheus server): the guest has no
# other network, and lo starts down
ip link set lo up 2>/dev/null || busybox ip link set lo up
echo "eo-guest: kernel $(uname -r), up $(cat $out/booted) s; pytest ${args[*]}"
cd "$worktree/tests" || exit 3
# loopback, for the tests that run a server on 127.0.0.1 (test_otlp.py's receiver)
ip link set lo up 2>/dev/null || busybox ip link set lo up
# the host-side runner test must not start a guest inside the guest; the wheel's tests
# build virtualenvs from PyPI, which the guest cannot reach (the .venv it runs is the
# wheel's install already)
"$worktree/.venv/bin/python" -m pytest -p no:cacheprovider --ignore=test_other_kernels.py \
  --ignore=test_wheel.py \
  "${args[@]}" 2>&1 | tee $out/pytest.log
status=${PIPESTATUS[0]}
cut -d' ' -f1 /proc/uptime > $out/finished
exit "$status"
