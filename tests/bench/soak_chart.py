#!/usr/bin/env python3
"""Draws devicelink-bench's soak chart from its soak.json.

usage: soak_chart.py SOAK_JSON SOAK_PNG

Four panels against time: each service's resident memory, its open file
descriptors, its Postgres pool use (the most connections in use, solid,
and requests waiting, dashed, seen in each interval), and p50 (dashed) and p99 (solid) latency per call kind.
A vertical line marks where the steady window the goal is judged on
starts. Exits 3 when matplotlib is missing.
"""

import json
import sys

NO_MATPLOTLIB = 3


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "soak_chart.py: matplotlib is not installed (pip install -r tests/bench/requirements.txt)",
            file=sys.stderr,
        )
        return NO_MATPLOTLIB

    with open(argv[1], encoding="utf-8") as handle:
        soak = json.load(handle)
    samples = soak["samples"]
    if not samples:
        print("soak_chart.py: no samples to draw", file=sys.stderr)
        return 1
    minutes = [sample["elapsed_s"] / 60 for sample in samples]
    services = [service["name"] for service in samples[0]["services"]]
    kinds = [call["kind"] for call in samples[0]["calls"]]

    def service_series(name, field, scale=1.0):
        values = []
        for sample in samples:
            service = next(s for s in sample["services"] if s["name"] == name)
            value = service[field]
            values.append(None if value is None else value * scale)
        return values

    figure, ((rss, fds), (pool, latency)) = plt.subplots(2, 2, figsize=(13, 8.4))
    for index, name in enumerate(services):
        colour = f"C{index}"
        rss.plot(minutes, service_series(name, "rss_kib", 1 / 1024), color=colour, marker="o", label=name)
        fds.plot(minutes, service_series(name, "fds"), color=colour, marker="o", label=name)
        pool.plot(minutes, service_series(name, "pool_in_use"), color=colour, marker="o", label=f"{name} in use (max)")
        pool.plot(minutes, service_series(name, "pool_waiting"), color=colour, linestyle="--", label=f"{name} waiting (max)")
    for index, kind in enumerate(kinds):
        colour = f"C{index + 2}"
        calls = [next(c for c in sample["calls"] if c["kind"] == kind) for sample in samples]
        p50 = [c["p50_ms"] if c["count"] else None for c in calls]
        p99 = [c["p99_ms"] if c["count"] else None for c in calls]
        latency.plot(minutes, p99, color=colour, marker=".", label=f"{kind} p99")
        latency.plot(minutes, p50, color=colour, linestyle="--")

    steady_from = soak.get("steady_from_sample", 5)
    steady_at = minutes[steady_from - 1] if len(minutes) >= steady_from else None
    for axes, title, unit in (
        (rss, "resident memory", "MiB"),
        (fds, "open file descriptors", "descriptors"),
        (pool, "Postgres pool", "connections / waiting requests"),
        (latency, "latency per call kind (p99 solid, p50 dashed)", "ms"),
    ):
        axes.set_title(title)
        axes.set_ylabel(unit)
        axes.set_xlabel("minutes")
        axes.grid(True, alpha=0.3)
        if steady_at is not None:
            axes.axvline(steady_at, color="grey", linestyle=":", linewidth=1)
        axes.legend(fontsize="small")
    rss.set_ylim(bottom=0)
    fds.set_ylim(bottom=0)
    pool.set_ylim(bottom=0)
    latency.set_yscale("log")

    settings = soak["settings"]
    goal = soak["goal"]
    verdict = "not judged" if goal["too_short"] else ("held" if goal["held"] else "NOT held")
    figure.suptitle(
        f"devicelink soak: {settings['link_rate']} links/s, {settings['poll_rate']} polls/s, "
        f"{settings['watchers']} watches, {settings['cpus']} cpus; goal {verdict}"
    )
    figure.tight_layout()
    figure.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
