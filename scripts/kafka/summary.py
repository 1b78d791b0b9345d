#!/usr/bin/env python3
"""Reads the runs of a bench-vs-kafka.sh session and sums them up.

    summary.py rates MANIFEST CASE FRACTION...   Kafka's median max_rate_found
                                                 times each fraction, one per line
    summary.py report RESULTS_DIR                summary.json and summary.md

MANIFEST has a line per sluice-bench run: phase, case, broker, round, run
folder (tab-separated). Every figure is taken from the run's run.json; the
summary gives, per case and broker, the median over rounds and the spread
(min and max), and Sluice's median divided by Kafka's.
"""
import json
import os
import re
import statistics
import sys


def read_manifest(path):
    rows = []
    with open(path) as f:
        for line in f:
            phase, case, broker, rnd, run = line.rstrip("\n").split("\t")
            rows.append({"phase": phase, "case": case, "broker": broker,
                         "round": int(rnd), "run": run})
    return rows


def points(run):
    with open(os.path.join(run, "run.json")) as f:
        return json.load(f)["points"]


def broker_figures(p):
    """Broker CPU s per GB and the brokers' peak RSS summed over processes."""
    cpu = p.get("cpu") or {}
    rss = [q["peak_rss_mib"] for q in cpu.get("processes", [])
           if q.get("broker") and q.get("peak_rss_mib") is not None]
    return {
        "broker_cpu_s_per_gb": cpu.get("broker_cpu_s_per_gb"),
        "broker_peak_rss_mib": round(sum(rss), 1) if rss else None,
        "client_cpu_s_per_gb": cpu.get("client_cpu_s_per_gb"),
    }


def latency(p, key, name):
    q = p[key]
    return {f"{name}_p50_ms": q["p50_us"] / 1e3, f"{name}_p99_ms": q["p99_us"] / 1e3,
            f"{name}_p99_9_ms": q["p99_9_us"] / 1e3}


def figures(phase, p):
    f = {"publish_rate_msgs": p["publish_rate_msgs"], "publish_rate_mb": p["publish_rate_mb"],
         "sustained": (p.get("sustain") or {}).get("sustained"), "errors": p["errors"]}
    if phase == "max":
        f["max_rate_found"] = p.get("max_rate_found")
    f.update(latency(p, "publish_latency", "publish"))
    f.update(latency(p, "end_to_end", "e2e"))
    f.update(broker_figures(p))
    return f


def rates(manifest, case, fractions):
    found = [points(r["run"])[0].get("max_rate_found") for r in read_manifest(manifest)
             if r["phase"] == "max" and r["case"] == case and r["broker"] == "kafka"]
    found = [x for x in found if x]
    if not found:
        sys.exit(f"summary.py: no max_rate_found for kafka, case {case}")
    median = statistics.median(found)
    for fr in fractions:
        print(max(1, round(median * float(fr))))


PERF_PRODUCER = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def perf_figures(path):
    """The last summary line of ProducerPerformance, the CSV row of
    ConsumerPerformance, and the broker CPU the script appended."""
    text = open(path).read()
    f = {}
    m = None
    for m in PERF_PRODUCER.finditer(text):
        pass
    if m:
        f.update({"records_per_s": float(m[2]), "mb_per_s": float(m[3]),
                  "p50_ms": float(m[6]), "p99_ms": float(m[8]), "p99_9_ms": float(m[9])})
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            head = [h.strip() for h in line.split(",")]
            row = [c.strip() for c in lines[i + 1].split(",")]
            if len(row) == len(head):
                d = dict(zip(head, row))
                f.update({"mb_per_s": float(d["MB.sec"]), "records_per_s": float(d["nMsg.sec"])})
    m = re.search(r"^broker_cpu_s=([\d.]+)", text, re.M)
    if m:
        f["broker_cpu_s"] = float(m[1])
    return f


def spread(values):
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def collect(res):
    rows = read_manifest(os.path.join(res, "manifest.tsv"))
    # (phase, case, point label) -> broker -> metric -> [values over rounds]
    table = {}
    for r in rows:
        for i, p in enumerate(points(r["run"])):
            label = "max rate" if r["phase"] == "max" else f"{p['target_rate']:.0f} msg/s"
            key = (r["phase"], r["case"], i, label)
            per = table.setdefault(key, {}).setdefault(r["broker"], {})
            for k, v in figures(r["phase"], p).items():
                per.setdefault(k, []).append(v)
    perf_dir = os.path.join(res, "perf")
    if os.path.isdir(perf_dir):
        for name in sorted(os.listdir(perf_dir)):
            m = re.match(r"(kafka|sluice)-(.+)-r(\d+)-(producer|consumer)\.txt$", name)
            if not m:
                continue
            key = ("perf", m[2], 0 if m[4] == "producer" else 1, f"kafka {m[4]}-perf-test")
            per = table.setdefault(key, {}).setdefault(m[1], {})
            for k, v in perf_figures(os.path.join(perf_dir, name)).items():
                per.setdefault(k, []).append(v)
    return table


def fmt(s):
    if s is None:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:g}"
    return f"{s['median']:g} ({s['min']:g}–{s['max']:g})"


def report(res):
    table = collect(res)
    out = []
    md = ["# Kafka against Sluice", "",
          "Median over rounds, (min–max) beside it; the last column is Sluice's median "
          "over Kafka's. Latencies in ms, CPU in broker CPU seconds per GB published, "
          "RSS in MiB summed over the brokers.", ""]
    for key in sorted(table, key=lambda k: ({"max": 0, "fixed": 1, "perf": 2}[k[0]], k[1], k[2])):
        phase, case, _, label = key
        brokers = table[key]
        metrics = []
        for b in ("kafka", "sluice"):
            metrics += [m for m in brokers.get(b, {}) if m not in metrics]
        entry = {"phase": phase, "case": case, "point": label, "metrics": {}}
        md += [f"## {case}: {label}", "", "| metric | Kafka | Sluice | Sluice/Kafka |",
               "|---|---|---|---|"]
        for m in metrics:
            if m == "sustained":
                # A verdict per round, not a figure: how many rounds held.
                v = {b: brokers.get(b, {}).get(m, []) for b in ("kafka", "sluice")}
                held = {b: f"{sum(1 for x in v[b] if x)}/{len(v[b])}" for b in v}
                entry["metrics"][m] = {"held": held, "rounds": v}
                md.append(f"| sustained (rounds) | {held['kafka']} | {held['sluice']} | |")
                continue
            k = spread(brokers.get("kafka", {}).get(m, []))
            s = spread(brokers.get("sluice", {}).get(m, []))
            ratio = round(s["median"] / k["median"], 2) if k and s and k["median"] else None
            entry["metrics"][m] = {"kafka": k, "sluice": s, "sluice_over_kafka": ratio,
                                   "rounds": {b: brokers.get(b, {}).get(m, []) for b in brokers}}
            md.append(f"| {m} | {fmt(k)} | {fmt(s)} | {ratio if ratio is not None else '–'} |")
        md.append("")
        out.append(entry)
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "rates":
        rates(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
