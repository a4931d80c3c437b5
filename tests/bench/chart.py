#!/usr/bin/env python3
"""Draws devicelink-bench's chart from its results.json.

usage: chart.py RESULTS_JSON CHART_PNG

For each call family (MintAuthCode, CreateUser, GetInstallStatus), three
panels against concurrency: requests per second, p99 latency (log scale),
and the CPU per call of the server and the stores (the service or floor
server, plus Redis and Postgres; floors (c) and (d) run inside the
benchmark, so theirs is the client's), the call beside its floor. Only the
benchmark's own client's rows are drawn, not h2load's. Exits 3 when
matplotlib is missing, so the benchmark can say what to install.
"""

import json
import sys

NO_MATPLOTLIB = 3

# One row of panels per call family; in each, the call solid and its floor
# dashed in the same colour.
GROUPS = [
    (
        "MintAuthCode",
        [
            ("mint_auth_code", "service", "MintAuthCode", "C0", "-"),
            ("mint_auth_code", "service_without_mint_events", "MintAuthCode, no mint events", "C0", "-."),
            ("mint_auth_code", "service_without_rate_limits", "MintAuthCode, no rate limits", "C3", "-."),
            ("mint_auth_code", "floor_b_redis_set", "floor (b) redis SET", "C0", "--"),
            ("mint_auth_code", "floor_a_echo", "floor (a) tonic echo", "C7", ":"),
        ],
    ),
    (
        "CreateUser",
        [
            ("create_user_new", "service", "CreateUser new", "C1", "-"),
            ("create_user_new", "floor_c_sql_sequence", "floor (c) SQL sequence, new", "C1", "--"),
            ("create_user_restore", "service", "CreateUser restore", "C2", "-"),
            ("create_user_restore", "floor_c_sql_sequence", "floor (c) SQL sequence, restore", "C2", "--"),
        ],
    ),
    (
        "GetInstallStatus",
        [
            ("get_install_status", "service", "GetInstallStatus", "C3", "-"),
            ("get_install_status", "floor_d_pk_lookup", "floor (d) PK lookup", "C3", "--"),
        ],
    ),
]


def cpu_per_call(measurement, subject):
    """The server's and the stores' CPU per call in µs, with the client's
    for floors (c) and (d), which run in the client; None when unknown."""
    cpu = measurement.get("cpu_us_per_call") or {}
    parts = ["server", "redis", "postgres"]
    if subject in ("floor_c_sql_sequence", "floor_d_pk_lookup"):
        parts = ["client", "redis", "postgres"]
    values = [cpu.get(part) for part in parts]
    if values[0] is None:
        return None
    return sum(value for value in values if value is not None)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator
    except ImportError:
        print(
            "chart.py: matplotlib is not installed (pip install -r tests/bench/requirements.txt)",
            file=sys.stderr,
        )
        return NO_MATPLOTLIB

    with open(argv[1], encoding="utf-8") as handle:
        results = json.load(handle)
    measurements = results["measurements"]

    figure, panels = plt.subplots(len(GROUPS), 3, figsize=(19, 4.2 * len(GROUPS)), squeeze=False)
    for (title, series), (throughput, p99, cpu) in zip(GROUPS, panels):
        ticks = set()
        for call, subject, label, colour, style in series:
            points = sorted(
                (m["concurrency"], m["requests_per_s"], m["p99_ms"], cpu_per_call(m, subject))
                for m in measurements
                if m["call"] == call and m["subject"] == subject and m.get("client", "bench") == "bench"
            )
            if not points:
                continue
            concurrency = [point[0] for point in points]
            ticks.update(concurrency)
            for axes, index in ((throughput, 1), (p99, 2), (cpu, 3)):
                values = [point[index] for point in points]
                if any(value is None for value in values):
                    continue
                axes.plot(
                    concurrency,
                    values,
                    linestyle=style,
                    color=colour,
                    marker="o",
                    label=label,
                )
        throughput.set_title(f"{title}: throughput")
        throughput.set_ylabel("requests / s")
        throughput.set_ylim(bottom=0)
        p99.set_title(f"{title}: p99 latency")
        p99.set_ylabel("ms")
        p99.set_yscale("log")
        cpu.set_title(f"{title}: CPU per call, server + Redis + Postgres")
        cpu.set_ylabel("µs")
        cpu.set_ylim(bottom=0)
        for axes in (throughput, p99, cpu):
            axes.set_xscale("log", base=2)
            if ticks:
                axes.set_xticks(sorted(ticks), [str(tick) for tick in sorted(ticks)])
            axes.xaxis.set_minor_locator(NullLocator())
            axes.set_xlabel("concurrency (tasks)")
            axes.grid(True, which="both", alpha=0.3)
        if throughput.get_legend_handles_labels()[0]:
            throughput.legend(fontsize="small")

    threads = results.get("service_threads") or "default"
    figure.suptitle(
        f"devicelink-bench ({results['mode']} run, {results['cpus']} cpus, "
        f"client threads {results['client_threads']}, service threads {threads})"
    )
    figure.tight_layout()
    figure.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
