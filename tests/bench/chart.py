#!/usr/bin/env python3
"""Draws devicelink-bench's chart from its results.json.

usage: chart.py RESULTS_JSON CHART_PNG

For each call family (MintAuthCode, CreateUser, GetInstallStatus), two
panels against concurrency: requests per second, and p99 latency (log
scale), the call beside its floor. Exits 3 when matplotlib is missing,
so the benchmark can say what to install.
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

    figure, panels = plt.subplots(len(GROUPS), 2, figsize=(13, 4.2 * len(GROUPS)), squeeze=False)
    for (title, series), (throughput, p99) in zip(GROUPS, panels):
        ticks = set()
        for call, subject, label, colour, style in series:
            points = sorted(
                (m["concurrency"], m["requests_per_s"], m["p99_ms"])
                for m in measurements
                if m["call"] == call and m["subject"] == subject
            )
            if not points:
                continue
            concurrency = [point[0] for point in points]
            ticks.update(concurrency)
            for axes, index in ((throughput, 1), (p99, 2)):
                axes.plot(
                    concurrency,
                    [point[index] for point in points],
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
        for axes in (throughput, p99):
            axes.set_xscale("log", base=2)
            if ticks:
                axes.set_xticks(sorted(ticks), [str(tick) for tick in sorted(ticks)])
            axes.xaxis.set_minor_locator(NullLocator())
            axes.set_xlabel("concurrency (tasks)")
            axes.grid(True, which="both", alpha=0.3)
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
