#!/usr/bin/env python3
"""Sums up a scripts/bench-metrics.sh session.

    metrics-summary.py RESULTS_DIR     writes summary.json and summary.md

RESULTS_DIR/manifest.tsv has a line per sluice-bench run: kind (fixed or
max), metrics mode (on: listener scraped every second; off: no listener),
round, run folder, load average before and after, scrapes made during the
run and how many failed (tab-separated). Every figure comes from the run's
run.json. Per kind and mode: the median over rounds with the lowest and
highest; then "on" against "off" as the change of the medians, and the
issue's bar: throughput and p99 within 3%.
"""
import json
import os
import statistics
import sys

# (key, label, higher is better)
FIGURES = [
    ("publish_rate_msgs", "publish msg/s", True),
    ("consume_rate_msgs", "consume msg/s", True),
    ("max_rate_found", "max rate found msg/s", True),
    ("publish_p99_ms", "publish p99 ms", False),
    ("e2e_p99_ms", "end-to-end p99 ms", False),
    ("broker_cpu_s_per_gb", "broker CPU s/GB", False),
]
BAR = 0.03


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def fmt(s, digits):
    if s is None:
        return "–"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])} [{f.format(s['min'])} – {f.format(s['max'])}]"


def load_rows(res):
    rows = []
    with open(os.path.join(res, "manifest.tsv")) as f:
        for line in f:
            (kind, mode, rnd, run, load0, load1, scrapes,
             failed) = line.rstrip("\n").split("\t")
            with open(os.path.join(run, "run.json")) as j:
                points = json.load(j)["points"]
            for p in points:
                cpu = p.get("cpu") or {}
                rows.append({
                    "kind": kind, "mode": mode, "round": int(rnd),
                    "run": os.path.relpath(run, res),
                    "load_before": load0, "load_after": load1,
                    "scrapes": int(scrapes), "scrapes_failed": int(failed),
                    "publish_rate_msgs": p["publish_rate_msgs"],
                    "consume_rate_msgs": p["consume_rate_msgs"],
                    "max_rate_found": p.get("max_rate_found"),
                    "publish_p99_ms": p["publish_latency"]["p99_us"] / 1e3,
                    "e2e_p99_ms": p["end_to_end"]["p99_us"] / 1e3,
                    "broker_cpu_s_per_gb": cpu.get("broker_cpu_s_per_gb"),
                    "sustained": (p.get("sustain") or {}).get("sustained"),
                    "errors": p["errors"], "unsent": p.get("unsent"),
                    "unconsumed": p.get("unconsumed"),
                })
    return rows


def main(res):
    rows = load_rows(res)
    summary = {"bar": BAR, "kinds": [], "rounds": rows}
    md = ["Metrics on (listener scraped every second) against off (no "
          "listener): median [lowest – highest] over rounds; change of the "
          "medians, on against off, with the issue's 3% bar on throughput "
          "and p99 (a change in the better direction passes).", ""]
    for kind in ("fixed", "max"):
        xs = [x for x in rows if x["kind"] == kind]
        if not xs:
            continue
        by_mode = {m: {k: spread([x[k] for x in xs if x["mode"] == m])
                       for k, _, _ in FIGURES} for m in ("on", "off")}
        entry = {"kind": kind, "on": by_mode["on"], "off": by_mode["off"],
                 "change": {}, "within_bar": {},
                 "rounds": sorted({x["round"] for x in xs}),
                 "scrapes": sum(x["scrapes"] for x in xs if x["mode"] == "on"),
                 "scrapes_failed": sum(x["scrapes_failed"] for x in xs),
                 "errors": sum(x["errors"] for x in xs)}
        md.append(f"### {kind} ({len(entry['rounds'])} round(s); "
                  f"{entry['scrapes']} scrapes while on, "
                  f"{entry['scrapes_failed']} failed; {entry['errors']} errors)")
        md.append("")
        md.append("| figure | metrics on | metrics off | change | within 3% |")
        md.append("|---|---|---|---|---|")
        for key, label, higher_better in FIGURES:
            on, off = by_mode["on"][key], by_mode["off"][key]
            if on is None and off is None:
                continue
            change = None
            if on and off and off["median"]:
                change = on["median"] / off["median"] - 1.0
            entry["change"][key] = change
            verdict = "–"
            if change is not None and key != "broker_cpu_s_per_gb":
                worse = -change if higher_better else change
                ok = worse <= BAR
                entry["within_bar"][key] = ok
                verdict = "yes" if ok else "**no**"
            digits = 2 if key.endswith("_ms") or key.endswith("_gb") else 0
            md.append(f"| {label} | {fmt(on, digits)} | {fmt(off, digits)} | "
                      f"{'–' if change is None else f'{change * 100:+.1f}%'} | {verdict} |")
        md.append("")
        summary["kinds"].append(entry)
    md.append("The max-rate search stops within 5% of the highest sustained "
              "rate, so its `max rate found` moves by that much between runs "
              "on its own; the publish and consume rates are measured at it.")
    md.append("")
    md.append("| kind | mode | round | publish msg/s | publish p99 ms | e2e p99 ms "
              "| broker CPU s/GB | scrapes (failed) | sustained | load before → after |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for x in sorted(rows, key=lambda x: (x["kind"], x["round"], x["mode"])):
        cpu = x["broker_cpu_s_per_gb"]
        md.append(f"| {x['kind']} | {x['mode']} | {x['round']} | "
                  f"{x['publish_rate_msgs']:,.0f} | {x['publish_p99_ms']:.2f} | "
                  f"{x['e2e_p99_ms']:.2f} | {'–' if cpu is None else f'{cpu:.2f}'} | "
                  f"{x['scrapes']} ({x['scrapes_failed']}) | {x['sustained']} | "
                  f"{x['load_before']} → {x['load_after']} |")
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
