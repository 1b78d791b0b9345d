#!/usr/bin/env python3
"""Sums up a scripts/bench-cleaner.sh session.

    cleaner-summary.py RESULTS_DIR           writes summary.json and summary.md
    cleaner-summary.py --count LOG T0 T1     passes in a window, one line

RESULTS_DIR/manifest.tsv has a line per measured run: mode (busy: the
churn topic is compacted and cleaned; idle: the same load, not compacted),
round, run folder, load average before and after, the window's start and
end (UTC, ISO 8601) and the broker's log. Latency figures come from the
run's run.json; the cleaner's work from the broker's "cleaned log" lines
(passes over topics other than the internal ones) that ended inside the
window. Per mode: the median over rounds with the lowest and highest;
then busy against idle as the ratio of the medians, and per round, with
the issue's bar: publish p99 busy at most 1.2x idle.
"""
import datetime
import json
import os
import re
import statistics
import sys

BAR = 1.2
# (key, label, digits)
FIGURES = [
    ("publish_p99_ms", "publish p99 ms", 2),
    ("publish_p50_ms", "publish p50 ms", 2),
    ("e2e_p99_ms", "end-to-end p99 ms", 2),
    ("publish_rate_msgs", "publish msg/s", 0),
    ("broker_cpu_s_per_gb", "broker CPU s/GB", 2),
    ("cleaner_passes", "cleaner passes in the window", 0),
    ("cleaner_mb_read", "MB of segments cleaned in the window", 0),
]


def when(text):
    """An ISO 8601 UTC time, any number of fraction digits."""
    text = text.rstrip("Z")
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?$", text)
    if not m:
        return None
    t = datetime.datetime.fromisoformat(m.group(1))
    return t + datetime.timedelta(microseconds=int((m.group(2) or "0")[:6].ljust(6, "0")))


def passes(log, t0, t1):
    """Passes over non-internal topics ending in [t0, t1]: count, bytes."""
    start, end = when(t0), when(t1)
    count, read = 0, 0
    with open(log, errors="replace") as f:
        for line in f:
            if "cleaned log" not in line:
                continue
            words = line.split()
            at = when(words[0]) if words else None
            fields = dict(w.split("=", 1) for w in words if "=" in w)
            if at is None or fields.get("topic", "__").startswith("__"):
                continue
            if start <= at <= end:
                count += 1
                read += int(fields.get("bytes_before", "0"))
    return count, read


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
            mode, rnd, run, load0, load1, t0, t1, log = line.rstrip("\n").split("\t")
            with open(os.path.join(run, "run.json")) as j:
                points = json.load(j)["points"]
            n, read = passes(log, t0, t1)
            for p in points:
                cpu = p.get("cpu") or {}
                rows.append({
                    "mode": mode, "round": int(rnd),
                    "run": os.path.relpath(run, res),
                    "load_before": load0, "load_after": load1,
                    "window": [t0, t1],
                    "publish_rate_msgs": p["publish_rate_msgs"],
                    "publish_p99_ms": p["publish_latency"]["p99_us"] / 1e3,
                    "publish_p50_ms": p["publish_latency"]["p50_us"] / 1e3,
                    "e2e_p99_ms": p["end_to_end"]["p99_us"] / 1e3,
                    "broker_cpu_s_per_gb": cpu.get("broker_cpu_s_per_gb"),
                    "cleaner_passes": n, "cleaner_mb_read": read / 1e6,
                    "sustained": (p.get("sustain") or {}).get("sustained"),
                    "errors": p["errors"],
                })
    return rows


def main(res):
    rows = load_rows(res)
    by_mode = {m: {k: spread([x[k] for x in rows if x["mode"] == m])
                   for k, _, _ in FIGURES} for m in ("busy", "idle")}
    busy, idle = by_mode["busy"]["publish_p99_ms"], by_mode["idle"]["publish_p99_ms"]
    ratio = busy["median"] / idle["median"] if busy and idle and idle["median"] else None
    per_round = {}
    for r in sorted({x["round"] for x in rows}):
        b = [x for x in rows if x["round"] == r and x["mode"] == "busy"]
        i = [x for x in rows if x["round"] == r and x["mode"] == "idle"]
        if b and i and i[0]["publish_p99_ms"]:
            per_round[r] = b[0]["publish_p99_ms"] / i[0]["publish_p99_ms"]
    summary = {"bar": BAR, "modes": by_mode, "p99_ratio_of_medians": ratio,
               "p99_ratio_per_round": per_round,
               "within_bar": None if ratio is None else ratio <= BAR, "rounds": rows}
    md = ["Publish latency at a fixed rate with the cleaner busy on another, "
          "compacted topic (busy) against the same load with that topic not "
          "compacted (idle): median [lowest – highest] over rounds.", "",
          "| figure | busy | idle |", "|---|---|---|"]
    for key, label, digits in FIGURES:
        md.append(f"| {label} | {fmt(by_mode['busy'][key], digits)} | "
                  f"{fmt(by_mode['idle'][key], digits)} |")
    md.append("")
    if ratio is not None:
        verdict = "within" if ratio <= BAR else "**over**"
        rounds = ", ".join(f"r{r}: {v:.2f}x" for r, v in per_round.items())
        md.append(f"Publish p99, busy / idle: {ratio:.2f}x of the medians "
                  f"({verdict} the {BAR}x bar); per round {rounds}.")
        md.append("")
    md.append("| mode | round | publish p99 ms | e2e p99 ms | publish msg/s | "
              "cleaner passes (MB) | sustained | errors | load before → after |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for x in sorted(rows, key=lambda x: (x["round"], x["mode"])):
        md.append(f"| {x['mode']} | {x['round']} | {x['publish_p99_ms']:.2f} | "
                  f"{x['e2e_p99_ms']:.2f} | {x['publish_rate_msgs']:,.0f} | "
                  f"{x['cleaner_passes']} ({x['cleaner_mb_read']:,.0f}) | "
                  f"{x['sustained']} | {x['errors']} | "
                  f"{x['load_before']} → {x['load_after']} |")
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--count":
        n, read = passes(*sys.argv[2:5])
        print(f"{n} ({read / 1e6:,.0f} MB of segments)")
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
