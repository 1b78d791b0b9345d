#!/usr/bin/env python3
"""Many partitions on one broker: idle RSS, Metadata for all topics, clean
restart and restart after SIGKILL. Run through scripts/bench-partitions.sh.

Readiness and Metadata latency use a raw Metadata v1 request for all topics
on one connection, so the figures are the broker's and the wire's, not a
client library's parsing. Restart time is from just before the process is
spawned until a Metadata response shows every partition of the benchmark's
topics with a leader and no error ("led"), and until single-record
produces, one partition after another across all topics, answer at normal
latency again: 20 in a row within five times (at least 20 ms) the median
the same probe had before the shutdown ("serving").
"""
import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

PREFIX = "many-parts-"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """One connection sending Metadata v1 (all topics) requests."""

    def __init__(self, port, timeout=60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def _read_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionError("broker closed the connection")
            got += k
        return bytes(buf)

    def metadata_raw(self):
        self.correlation += 1
        client = b"bench-partitions"
        # Header v1: api key 3 (Metadata), version 1, correlation, client id;
        # body: topics = null (all topics).
        body = struct.pack(">hhih", 3, 1, self.correlation, len(client)) + client
        body += struct.pack(">i", -1)
        self.sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", self._read_exact(4))[0]
        resp = self._read_exact(size)
        corr = struct.unpack_from(">i", resp, 0)[0]
        if corr != self.correlation:
            raise RuntimeError(f"correlation {corr} != {self.correlation}")
        return resp


def led_partitions(resp):
    """Partitions of the benchmark's topics that have a leader and no error."""
    pos = 4
    (n_brokers,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(n_brokers):
        pos += 4
        (hl,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + hl + 4
        (rl,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + max(rl, 0)
    pos += 4  # controller id
    (n_topics,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    led = 0
    for _ in range(n_topics):
        terr, nl = struct.unpack_from(">hh", resp, pos)
        pos += 4
        name = resp[pos : pos + nl]
        pos += nl + 1  # name, is_internal
        (n_parts,) = struct.unpack_from(">i", resp, pos)
        pos += 4
        ours = terr == 0 and name.startswith(PREFIX.encode())
        for _ in range(n_parts):
            perr, _idx, leader, n_rep = struct.unpack_from(">hiii", resp, pos)
            pos += 14 + 4 * n_rep
            (n_isr,) = struct.unpack_from(">i", resp, pos)
            pos += 4 + 4 * n_isr
            if ours and perr == 0 and leader >= 0:
                led += 1
    return led


class Broker:
    def __init__(self, binary, data_dir, port, log_path, extra):
        self.binary, self.data_dir, self.port = binary, data_dir, port
        self.log_path, self.extra = log_path, extra
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        args = [self.binary, "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", self.data_dir] + self.extra
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=log, stderr=log,
                                     env=dict(os.environ, SLUICE_LOG="warn"))
        log.close()
        return t0

    def wait_ready(self, expected, t0, deadline_s=300.0):
        """Seconds from t0 until Metadata shows `expected` led partitions."""
        end = time.perf_counter() + deadline_s
        conn = None
        while time.perf_counter() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=30.0)
                if led_partitions(conn.metadata_raw()) >= expected:
                    elapsed = time.perf_counter() - t0
                    conn.close()
                    return elapsed
            except (OSError, ConnectionError):
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.005)
        raise RuntimeError(f"not ready after {deadline_s} s")

    def stop(self, sig):
        """Sends sig and waits; returns the seconds until the process exited."""
        t0 = time.perf_counter()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=300)
        return time.perf_counter() - t0

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def create_topics(port, topics, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    names = [f"{PREFIX}{i:04d}" for i in range(topics)]
    for i in range(0, len(names), 100):
        futures = admin.create_topics(
            [NewTopic(n, partitions, 1) for n in names[i : i + 100]],
            request_timeout=120, operation_timeout=120)
        for f in futures.values():
            f.result()
    return names


def produce_some(port, names, partitions, records):
    """`records` 100-byte records into each partition of `names`, so the
    active segments hold data to recover."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "1",
                  "linger.ms": 5, "queue.buffering.max.messages": 1000000})
    value = b"x" * 100
    for name in names:
        for part in range(partitions):
            for _ in range(records):
                p.produce(name, value, partition=part)
        p.poll(0)
    if p.flush(600) != 0:
        raise RuntimeError("produce did not complete")


class Prober:
    """Single-record produces (acks=1, no linger), each waited for, spread
    over all partitions of the benchmark's topics: how fast the broker
    answers a client that writes, partition after partition."""

    def __init__(self, port, names, partitions):
        from confluent_kafka import Producer

        self.names, self.partitions, self.i = names, partitions, 0
        self.p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "acks": "1",
                           "linger.ms": 0, "message.timeout.ms": 300000})

    def once_ms(self):
        # A stride through the topics, so consecutive probes land far apart.
        k = self.i
        self.i += 1
        name = self.names[(k * 37) % len(self.names)]
        part = (k // len(self.names)) % self.partitions
        t0 = time.perf_counter()
        self.p.produce(name, b"p" * 100, partition=part)
        if self.p.flush(300) != 0:
            raise RuntimeError("probe produce did not complete")
        return (time.perf_counter() - t0) * 1000


def produce_baseline_ms(port, names, partitions, n=50):
    """Median single-record produce latency of a broker that has been up."""
    prober = Prober(port, names, partitions)
    prober.once_ms()  # the client's first request also fetches metadata
    return statistics.median(prober.once_ms() for _ in range(n))


def wait_serving(port, names, partitions, t0, baseline_ms, streak=20, deadline_s=300.0):
    """Seconds from t0 until `streak` probe produces in a row each answer
    within max(5 x baseline, 20 ms): the broker serves at normal latency.
    Counted to the start of that streak."""
    limit = max(5 * baseline_ms, 20.0)
    prober = Prober(port, names, partitions)
    end = time.perf_counter() + deadline_s
    start, good = None, 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        if prober.once_ms() <= limit:
            start = t if good == 0 else start
            good += 1
            if good >= streak:
                return start - t0
        else:
            good = 0
    raise RuntimeError(f"produce latency not back under {limit:.1f} ms after {deadline_s} s")


def metadata_latency(port, n):
    conn = Conn(port)
    conn.metadata_raw()  # the connection's first request is not timed
    samples = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        resp = conn.metadata_raw()
        samples.append((time.perf_counter() - t0) * 1000)
        size = len(resp)
    conn.close()
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 2),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
            "max_ms": round(samples[-1], 2), "bytes": size}


def disk_kib(path):
    used = int(subprocess.check_output(["du", "-sk", path]).split()[0])
    apparent = int(subprocess.check_output(["du", "-sk", "--apparent-size", path]).split()[0])
    files = sum(len(f) for _, _, f in os.walk(path))
    return {"allocated_kib": used, "apparent_kib": apparent, "files": files}


def summary(values):
    values = list(values)
    return {"median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def main():
    try:
        run(lambda b: globals().__setitem__("_broker", b))
    finally:
        b = globals().get("_broker")
        if b is not None and b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def run(keep):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metadata-requests", type=int, default=200)
    ap.add_argument("--produce-topics", type=int, default=100,
                    help="topics written to before each shutdown")
    ap.add_argument("--records", type=int, default=20,
                    help="records per partition written before each shutdown")
    ap.add_argument("--idle-seconds", type=float, default=3.0)
    ap.add_argument("--bench", help="sluice-bench binary, for --workload")
    ap.add_argument("--workload", help="run this sluice-bench workload against the "
                    "broker, its partitions all in place, after the rounds")
    ap.add_argument("broker_args", nargs="*")
    a = ap.parse_args()

    total = a.topics * a.partitions
    data = os.path.join(a.work, "data")
    broker = Broker(a.sluice, data, free_port(), os.path.join(a.work, "broker.log"),
                    a.broker_args)
    keep(broker)
    out = lambda d: print(json.dumps(d), flush=True)
    out({"bench": "machine", "cpus": os.cpu_count(), "kernel": os.uname().release,
         "topics": a.topics, "partitions": total, "broker_args": a.broker_args})

    t0 = broker.start()
    broker.wait_ready(0, t0)
    tc = time.perf_counter()
    names = create_topics(broker.port, a.topics, a.partitions)
    broker.wait_ready(total, tc)
    out({"bench": "create", "seconds": round(time.perf_counter() - tc, 2)})

    rounds = []
    for r in range(1, a.rounds + 1):
        time.sleep(a.idle_seconds)
        row = {"bench": "round", "round": r, "idle_rss_kib": broker.rss_kib()}
        row["metadata"] = metadata_latency(broker.port, a.metadata_requests)
        tp = time.perf_counter()
        produce_some(broker.port, names[: a.produce_topics], a.partitions, a.records)
        row["produce_s"] = round(time.perf_counter() - tp, 2)
        base = produce_baseline_ms(broker.port, names, a.partitions)
        row["produce_baseline_p50_ms"] = round(base, 2)
        row["clean_shutdown_s"] = round(broker.stop(signal.SIGTERM), 3)
        row["disk"] = disk_kib(data)
        t0 = broker.start()
        row["clean_restart_s"] = round(broker.wait_ready(total, t0), 3)
        row["clean_restart_serving_s"] = round(
            wait_serving(broker.port, names, a.partitions, t0, base), 3)
        row["rss_after_clean_restart_kib"] = broker.rss_kib()
        tp = time.perf_counter()
        produce_some(broker.port, names[: a.produce_topics], a.partitions, a.records)
        row["produce_after_restart_s"] = round(time.perf_counter() - tp, 2)
        broker.stop(signal.SIGKILL)
        t0 = broker.start()
        row["kill_restart_s"] = round(broker.wait_ready(total, t0), 3)
        row["kill_restart_serving_s"] = round(
            wait_serving(broker.port, names, a.partitions, t0, base), 3)
        out(row)
        rounds.append(row)

    time.sleep(a.idle_seconds)
    final = {"bench": "summary", "partitions": total, "rounds": len(rounds),
             "idle_rss_mib": summary(x["idle_rss_kib"] / 1024 for x in rounds),
             "metadata_p50_ms": summary(x["metadata"]["p50_ms"] for x in rounds),
             "metadata_p99_ms": summary(x["metadata"]["p99_ms"] for x in rounds),
             "metadata_response_bytes": rounds[-1]["metadata"]["bytes"],
             "clean_shutdown_s": summary(x["clean_shutdown_s"] for x in rounds),
             "clean_restart_s": summary(x["clean_restart_s"] for x in rounds),
             "kill_restart_s": summary(x["kill_restart_s"] for x in rounds),
             "clean_restart_serving_s": summary(x["clean_restart_serving_s"] for x in rounds),
             "kill_restart_serving_s": summary(x["kill_restart_serving_s"] for x in rounds),
             "produce_baseline_p50_ms": summary(x["produce_baseline_p50_ms"] for x in rounds),
             "produce_s": summary(x["produce_s"] for x in rounds),
             "produce_after_restart_s": summary(x["produce_after_restart_s"] for x in rounds),
             "disk_allocated_mib": summary(x["disk"]["allocated_kib"] / 1024 for x in rounds),
             "disk_apparent_mib": summary(x["disk"]["apparent_kib"] / 1024 for x in rounds),
             "files": rounds[-1]["disk"]["files"],
             "idle_rss_after_kill_restart_mib": round(broker.rss_kib() / 1024, 1)}
    out(final)
    if a.workload:
        # The harness prints its own report; its run.json is in --out.
        subprocess.run([a.bench, "run", a.workload, "--bootstrap",
                        f"127.0.0.1:{broker.port}", "--broker-pid", str(broker.proc.pid),
                        "--out", os.path.join(a.work, "bench")], check=True)
        for root, _, files in os.walk(os.path.join(a.work, "bench")):
            if "run.json" in files:
                print(open(os.path.join(root, "run.json")).read(), file=sys.stderr)
    broker.stop(signal.SIGTERM)


if __name__ == "__main__":
    main()
