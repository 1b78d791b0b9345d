#!/usr/bin/env python3
"""Summarises rounds of workloads/security-sweep.yaml: per protocol, each
round's produce and consume MB/s and broker CPU seconds per GB, their
medians, and each round's ratio to the PLAINTEXT point of the same round
(the ratio cancels what a neighbour's load did to the whole round).
Usage: scripts/security-summary.py RUN_JSON..."""
import json
import statistics
import sys


def main(paths):
    rounds = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        points = {}
        for p in run["points"]:
            protocol = dict(p["settings"]).get("security.protocol", "PLAINTEXT")
            cpu = (p.get("cpu") or {}).get("broker_cpu_s_per_gb")
            c = p.get("broker_counters") or {}
            points[protocol] = {
                "produce": p["publish_rate_mb"],
                "consume": p["consume_rate_mb"],
                "cpu_gb": cpu,
                "tls_bytes": c.get("fetch_tls_bytes", 0),
                "sendfile_bytes": c.get("fetch_sendfile_bytes", 0),
            }
        rounds.append(points)
    protocols = list(rounds[0])
    print(f"{len(rounds)} rounds; figures per round, then median [min-max]")
    print(f"{'protocol':<12} {'produce MB/s':>28} {'consume MB/s':>28} {'broker CPU s/GB':>28}")
    for proto in protocols:
        row = [proto.ljust(12)]
        for k in ("produce", "consume", "cpu_gb"):
            vals = [r[proto][k] for r in rounds if r.get(proto) and r[proto][k] is not None]
            row.append(cell(vals).rjust(28))
        print(" ".join(row))
    print("ratio to PLAINTEXT in the same round, median [min-max]")
    for proto in protocols:
        if proto == "PLAINTEXT":
            continue
        row = [proto.ljust(12)]
        for k in ("produce", "consume", "cpu_gb"):
            vals = [
                r[proto][k] / r["PLAINTEXT"][k]
                for r in rounds
                if r.get(proto) and r[proto][k] and r["PLAINTEXT"][k]
            ]
            row.append(cell(vals, "{:.2f}").rjust(28))
        print(" ".join(row))
    for i, r in enumerate(rounds):
        paths_ok = ", ".join(
            f"{p}: tls {v['tls_bytes'] / 1e9:.2f} GB, sendfile {v['sendfile_bytes'] / 1e9:.2f} GB"
            for p, v in r.items()
        )
        print(f"round {i + 1} fetch paths: {paths_ok}")


def cell(vals, fmt="{:.1f}"):
    if not vals:
        return "-"
    return (
        " ".join(fmt.format(v) for v in vals)
        + " | "
        + fmt.format(statistics.median(vals))
        + " ["
        + fmt.format(min(vals))
        + "-"
        + fmt.format(max(vals))
        + "]"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
