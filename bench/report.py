"""RESULTS.md from run.py's medians: the tables, the comparison, the targets."""

from __future__ import annotations

from collections.abc import Callable

Medians = dict[tuple[str, str], dict[str, object]]

# (heading, metric, format)
COLUMNS = (
    ("throughput ratio", "throughput_ratio", ".3f"),
    ("capture", "capture_ratio", ".4f"),
    ("lost (reported)", "lost", ".0f"),
    ("unaccounted (worst)", "worst_gap", "d"),
    ("tracer CPU µs/event", "tracer_cpu_us_per_event", ".2f"),
    ("tracer CPU s", "tracer_cpu_s", ".2f"),
    ("storm CPU µs/open added", "storm_cpu_added_us", ".2f"),
    ("peak RSS MiB", "peak_rss_mib", ".1f"),
    ("ready s", "ready_s", ".3f"),
    ("path bytes printed/real", "path_bytes_ratio", ".3f"),
    ("untraced opens/s", "baseline_opens_per_s", ",.0f"),
    ("runs failed (not in medians)", "failed", "d"),
)

ECHO_OPEN_VARIANTS = ("echo-open", "echo-open-json")
FULL_CAPTURE_MODES = ("miss", "hit", "long")


def _fmt(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "d":
        return str(int(value))  # type: ignore[call-overload]
    return format(value, fmt)


def render(env: dict[str, object], med: Medians, drain: dict[str, object] | None,
           modes: list[str], tracers: list[str]) -> str:
    parts = [_header(env), _commands(env), _tables(med, modes, tracers),
             _versus_opensnoop(med, modes), _targets(med, modes), _drain(drain),
             _notes()]
    return "\n".join(p for p in parts if p)


def _header(env: dict[str, object]) -> str:
    return f"""# echo-open benchmark results

Written by `bench/run.py` (see bench/README.md). Medians over {env['pairs']} A/B pairs per
mode x tracer; each storm ran {env['seconds']} s, pinned to CPU 0, each tracer pinned to CPU 1,
SIGINT {env['settle']} s after the storm ended.

| | |
|---|---|
| date | {env['date']} |
| kernel (`uname -r`) | {env['kernel']} |
| CPUs | {env['cpus']} x {env['cpu_model']} |
| kernel.bpf_stats_enabled | {env['bpf_stats_enabled']} |
| load average at the end | {env['loadavg']} |
| other BPF links attached (min/median/max over runs) | {_links(env)} |
| echo-open measured | {env['echo_open_version']} |
| command | `{env['command']}` |
| wall time | {env['minutes']:.1f} min |
"""


def _links(env: dict[str, object]) -> str:
    links: dict[str, int] = env.get("foreign_links") or {}  # type: ignore[assignment]
    return f"{links.get('min')} / {links.get('median')} / {links.get('max')}"


def _commands(env: dict[str, object]) -> str:
    lines = ["## Command lines", "", "| tracer | command |", "|---|---|"]
    tracer_commands: dict[str, str] = env["tracer_commands"]  # type: ignore[assignment]
    storm_commands: dict[str, str] = env["storm_commands"]  # type: ignore[assignment]
    lines += [f"| {name} | `{cmd} > OUT 2> ERR` |" for name, cmd in tracer_commands.items()]
    lines += ["", "| mode | storm command |", "|---|---|"]
    lines += [f"| {mode} | `{cmd}` |" for mode, cmd in storm_commands.items()]
    return "\n".join(lines) + "\n"


def _tables(med: Medians, modes: list[str], tracers: list[str]) -> str:
    head = "| tracer | " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    out = ["## Medians per mode x tracer", ""]
    for mode in modes:
        out += [f"### {mode}", "", head, rule]
        for tracer in tracers:
            m = med.get((mode, tracer))
            if m is None:
                continue
            cells = [_fmt(m.get(metric), fmt) for _, metric, fmt in COLUMNS]
            out.append(f"| {tracer} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _versus_opensnoop(med: Medians, modes: list[str]) -> str:
    rows = []
    for mode in modes:
        peer = med.get((mode, "opensnoop"))
        if peer is None:
            continue
        for name in (*ECHO_OPEN_VARIANTS, "echo-open-nomatch"):
            peer_name = "opensnoop-nomatch" if name.endswith("nomatch") else "opensnoop"
            ours, theirs = med.get((mode, name)), med.get((mode, peer_name))
            if ours is None or theirs is None:
                continue
            rows.append(f"| {mode} | {name} vs {peer_name} | "
                        f"{_quotient(ours, theirs, 'throughput_ratio')} | "
                        f"{_quotient(ours, theirs, 'tracer_cpu_us_per_event')} | "
                        f"{_quotient(ours, theirs, 'storm_cpu_added_us')} | "
                        f"{_quotient(ours, theirs, 'peak_rss_mib')} |")
    if not rows:
        return ""
    return "\n".join([
        "## echo-open ÷ opensnoop (medians)", "",
        "Throughput above 1 is better for echo-open; the CPU and RSS quotients below 1 are.", "",
        "| mode | pair | throughput ratio | tracer CPU/event | storm CPU added | peak RSS |",
        "|---|---|---|---|---|---|", *rows, ""])


def _quotient(ours: dict[str, object], theirs: dict[str, object], metric: str) -> str:
    a, b = ours.get(metric), theirs.get(metric)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "-"
    return f"{a / b:.2f}"


Check = tuple[str, str, Callable[[dict[str, object]], bool | None], str]


def _targets(med: Medians, modes: list[str]) -> str:
    def at_least(metric: str, floor: float) -> Callable[[dict[str, object]], bool | None]:
        return lambda m: None if m.get(metric) is None else m[metric] >= floor  # type: ignore

    def at_most(metric: str, ceiling: float) -> Callable[[dict[str, object]], bool | None]:
        return lambda m: None if m.get(metric) is None else m[metric] <= ceiling  # type: ignore

    def exact(m: dict[str, object]) -> bool:
        return m["exact_pairs"] == m["n"]

    checks: list[Check] = []
    for mode in FULL_CAPTURE_MODES:
        for name in ECHO_OPEN_VARIANTS:
            checks += [
                (mode, name, at_least("throughput_ratio", 0.50), "throughput ratio ≥ 0.50"),
                (mode, name, at_least("capture_ratio", 1.0), "capture 100%"),
                (mode, name, exact, "captured + reported drops == opens, every pair"),
                (mode, name, at_most("tracer_cpu_us_per_event", 2.0), "tracer CPU ≤ 2 µs/event"),
                (mode, name, at_most("peak_rss_mib", 40.0), "peak RSS ≤ 40 MiB"),
                (mode, name, at_most("ready_s", 0.25), "ready ≤ 0.25 s"),
            ]
        checks.append((mode, "echo-open-nomatch", at_least("throughput_ratio", 0.85),
                       "no-match filter: throughput ratio ≥ 0.85"))
        floor = med.get((mode, "opensnoop-nomatch"), {}).get("throughput_ratio")
        if isinstance(floor, (int, float)):
            checks.append((mode, "echo-open-nomatch", at_least("throughput_ratio", 0.95 * floor),
                           f"no-match filter: within 5% of opensnoop -p's {floor:.3f} "
                           "(the floor, same run)"))
    checks += [
        ("long", "echo-open", at_least("path_bytes_ratio", 1.0), "whole path printed"),
        ("miss-50k", "echo-open", at_least("throughput_ratio", 0.97), "throughput ratio ≥ 0.97"),
        ("miss-50k", "echo-open", at_least("capture_ratio", 1.0), "capture 100%"),
        ("miss-50k", "echo-open", exact, "captured + reported drops == opens, every pair"),
        ("miss-50k", "echo-open", at_most("storm_cpu_added_us", 3.0),
         "≤ 3 µs storm CPU added per open"),
    ]
    rows = []
    for mode, name, check, text in checks:
        m = med.get((mode, name))
        if m is None or mode not in modes:
            continue
        verdict = check(m)
        mark = "-" if verdict is None else ("meets" if verdict else "**misses**")
        rows.append(f"| {mode} | {name} | {text} | {mark} |")
    return "\n".join(["## Targets (echo-open)", "", "| mode | tracer | target | median |",
                      "|---|---|---|---|", *rows, ""])


def _drain(drain: dict[str, object] | None) -> str:
    if not drain:
        return ""
    lines = ["## Consumer micro-benchmark (bench/drain.py)", "",
             "A full ring, no consumer while it filled; then timed in one process "
             "(target ≥ 1.5M records/s decoded).", "",
             "| mode | records | ring MiB | ring copy rec/s | decode rec/s | decode, GC off | "
             "read() rec/s | drain() rec/s | table ev/s | JSON ev/s | table in C rec/s | "
             "JSON in C rec/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in drain.get("runs", []):  # type: ignore[union-attr]
        lines.append(
            f"| {row['mode']} | {row['records']:,} | {row['ring_mib']} | "
            f"{row['copy_per_s']:,.0f} | {row['decode_per_s']:,.0f} | "
            f"{row.get('decode_nogc_per_s', 0):,.0f} | "
            f"{row['read_per_s']:,.0f} | {row['drain_per_s']:,.0f} | "
            f"{row['table_per_s']:,.0f} | {row['json_per_s']:,.0f} | "
            f"{row.get('table_c_per_s', 0):,.0f} | {row.get('json_c_per_s', 0):,.0f} |")
    lines += ["", "decode_batch() turns the cyclic GC off while it runs; \"decode, GC off\" "
              "also keeps it off between batches. table and JSON are the library's Python "
              "renderers over decoded events; \"in C\" is the CLI's path (csrc/render.c over "
              "the raw batches, no events made)."]
    return "\n".join(lines) + "\n"


def _notes() -> str:
    return """## How to read this

- throughput ratio: storm opens/s under the tracer ÷ the paired untraced run just before it.
- capture: storm lines in the tracer's output (lines with the storm's `eo-storm-` directory)
  ÷ opens the storm made. lost: what the tracer itself reported (echo-open's exit summary,
  ring full + args full; opensnoop/bpftrace "Lost N events"). unaccounted: opens - captured -
  lost - path faults, the worst pair; nonzero means events vanished without a report.
- tracer CPU: user+sys of the tracer process from the moment it was ready until it exited
  (wait4 rusage minus /proc/PID/stat at ready), ÷ every event line it printed (the whole
  machine's opens, not only the storm's); "-" when it printed fewer than 1000.
- storm CPU added: the storm's own user+sys per open (getrusage) traced - untraced.
- peak RSS: the larger of VmHWM before SIGINT and wait4's ru_maxrss.
- ready: from the tracer's exec to its header on stdout (echo-open table, bpftrace's BEGIN
  line), to "echo-open: tracing" on stderr (echo-open --json: no header), or to when every BPF
  program it loaded is linked (opensnoop, whose header waits in stdio's buffer).
- The machine is shared: other BPF links attached meanwhile slow every syscall, in both runs of
  a pair; `foreign_links` in bench/build/results.jsonl has the count per run.
"""
