#!/usr/bin/env python3
"""Sums up a scripts/bench-transactions.sh session.

    transactions-summary.py RESULTS_DIR     writes summary.json and summary.md

RESULTS_DIR/manifest.tsv has a line per sluice-bench run: kind (max or
backlog), broker, round, run folder, load average before and after
(tab-separated). Every figure comes from the run's run.json. Per broker and
point: the median over rounds with the lowest and highest; each
transactional point's maximum is divided by the same round's idempotent
maximum (transaction.messages 0) before the median is taken, and each
read_committed drain rate by the same round's read_uncommitted one.
"""
import json
import os
import statistics
import sys


def setting(p, key):
    for k, v in p.get("settings", []):
        if k == key or k.endswith("." + key):
            return str(v)
    return None


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def fmt(s, digits=0, scale=1.0):
    if s is None:
        return "–"
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(s['median'] * scale)} "
            f"[{f.format(s['min'] * scale)} – {f.format(s['max'] * scale)}]")


def main(res):
    rows = []
    with open(os.path.join(res, "manifest.tsv")) as f:
        for line in f:
            kind, broker, rnd, run, load0, load1 = line.rstrip("\n").split("\t")
            with open(os.path.join(run, "run.json")) as j:
                points = json.load(j)["points"]
            rows.append({"kind": kind, "broker": broker, "round": int(rnd),
                         "run": os.path.relpath(run, res), "load_before": load0,
                         "load_after": load1, "points": points})
    per_round = []
    for r in rows:
        if r["kind"] == "max":
            base = None
            for p in r["points"]:
                if setting(p, "transaction.messages") == "0":
                    base = p.get("max_rate_found")
            for p in r["points"]:
                t = p.get("transactions") or {}
                cpu = p.get("cpu") or {}
                m = p.get("max_rate_found")
                per_round.append({
                    "kind": "max", "broker": r["broker"], "round": r["round"],
                    "load_before": r["load_before"], "load_after": r["load_after"],
                    "transaction_messages": int(setting(p, "transaction.messages") or 0),
                    "max_rate_found": m,
                    "of_baseline": (m / base) if (m and base) else None,
                    "sustained": (p.get("sustain") or {}).get("sustained"),
                    "commits_per_s": t.get("rate_per_s"),
                    "committed": t.get("committed"), "aborted": t.get("aborted"),
                    "endtxn_p50_ms": t["commit_latency"]["p50_us"] / 1e3 if t else None,
                    "endtxn_p99_ms": t["commit_latency"]["p99_us"] / 1e3 if t else None,
                    "begin_to_commit_p50_ms": t["begin_to_commit"]["p50_us"] / 1e3 if t else None,
                    "begin_to_commit_p99_ms": t["begin_to_commit"]["p99_us"] / 1e3 if t else None,
                    "e2e_p99_ms": p["end_to_end"]["p99_us"] / 1e3,
                    "client_cpu_s_per_gb": cpu.get("client_cpu_s_per_gb"),
                    "broker_cpu_s_per_gb": cpu.get("broker_cpu_s_per_gb"),
                    "errors": p["errors"], "unsent": p.get("unsent"),
                    "unconsumed": p.get("unconsumed"),
                })
        else:
            drains = {}
            for p in r["points"]:
                b = p.get("backlog") or {}
                cpu = p.get("cpu") or {}
                level = setting(p, "isolation.level") or "?"
                drains[level] = b.get("drain_rate_msgs")
                per_round.append({
                    "kind": "backlog", "broker": r["broker"], "round": r["round"],
                    "load_before": r["load_before"], "load_after": r["load_after"],
                    "isolation_level": level,
                    "backlog_messages": b.get("backlog_messages"),
                    "drain_rate_msgs": b.get("drain_rate_msgs"),
                    "drain_rate_mb": b.get("drain_rate_mb"),
                    "client_cpu_s_per_gb": cpu.get("client_cpu_s_per_gb"),
                    "broker_cpu_s_per_gb": cpu.get("broker_cpu_s_per_gb"),
                    "errors": p["errors"], "unconsumed": p.get("unconsumed"),
                })
            rc, ru = drains.get("read_committed"), drains.get("read_uncommitted")
            for x in per_round:
                if (x["kind"] == "backlog" and x["broker"] == r["broker"]
                        and x["round"] == r["round"]):
                    x["rc_of_ru"] = (rc / ru) if (rc and ru) else None

    summary = {"max": [], "backlog": [], "rounds": per_round}
    md = []
    md.append("| broker | transaction.messages | sustained max msg/s | of the same round's "
              "baseline | commits/s | EndTxn p50 / p99 ms | first message to commit "
              "p50 / p99 ms | e2e p99 ms | CPU s/GB client / broker |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for broker in ("sluice", "kafka"):
        for n in (0, 100, 1000):
            xs = [x for x in per_round if x["kind"] == "max" and x["broker"] == broker
                  and x["transaction_messages"] == n]
            if not xs:
                continue
            s = {k: spread([x[k] for x in xs]) for k in (
                "max_rate_found", "of_baseline", "commits_per_s", "endtxn_p50_ms",
                "endtxn_p99_ms", "begin_to_commit_p50_ms", "begin_to_commit_p99_ms",
                "e2e_p99_ms", "client_cpu_s_per_gb", "broker_cpu_s_per_gb")}
            s.update({"broker": broker, "transaction_messages": n,
                      "errors": sum(x["errors"] for x in xs),
                      "aborted": sum(x["aborted"] or 0 for x in xs),
                      "unconsumed": sum(x["unconsumed"] or 0 for x in xs)})
            summary["max"].append(s)

            def med(k, d=2):
                return "–" if s[k] is None else f"{s[k]['median']:.{d}f}"
            md.append(
                f"| {broker} | {n:,}{' (idempotent)' if n == 0 else ''} "
                f"| {fmt(s['max_rate_found'])} "
                f"| {'–' if n == 0 else fmt(s['of_baseline'], 2)} "
                f"| {'–' if n == 0 else fmt(s['commits_per_s'])} "
                f"| {'–' if n == 0 else med('endtxn_p50_ms') + ' / ' + med('endtxn_p99_ms')} "
                f"| {'–' if n == 0 else med('begin_to_commit_p50_ms', 1) + ' / ' + med('begin_to_commit_p99_ms', 1)} "
                f"| {fmt(s['e2e_p99_ms'])} "
                f"| {med('client_cpu_s_per_gb')} / {med('broker_cpu_s_per_gb')} |")
    md.append("")
    md.append("| broker | isolation.level | backlog drain msg/s | read_committed of "
              "read_uncommitted (same round) | CPU s/GB client / broker |")
    md.append("|---|---|---|---|---|")
    for broker in ("sluice", "kafka"):
        for level in ("read_committed", "read_uncommitted"):
            xs = [x for x in per_round if x["kind"] == "backlog" and x["broker"] == broker
                  and x["isolation_level"] == level]
            if not xs:
                continue
            s = {k: spread([x.get(k) for x in xs]) for k in (
                "drain_rate_msgs", "rc_of_ru", "client_cpu_s_per_gb", "broker_cpu_s_per_gb")}
            s.update({"broker": broker, "isolation_level": level,
                      "errors": sum(x["errors"] for x in xs)})
            summary["backlog"].append(s)
            cpu = " / ".join("–" if s[k] is None else f"{s[k]['median']:.2f}"
                             for k in ("client_cpu_s_per_gb", "broker_cpu_s_per_gb"))
            md.append(f"| {broker} | {level} | {fmt(s['drain_rate_msgs'])} "
                      f"| {fmt(s['rc_of_ru'], 2) if level == 'read_committed' else '–'} "
                      f"| {cpu} |")
    md.append("")
    md.append("Load average (1, 5, 15 min) before and after each run:")
    md.append("")
    for r in rows:
        md.append(f"- {r['kind']} {r['broker']} round {r['round']}: "
                  f"{r['load_before']} → {r['load_after']}")
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
