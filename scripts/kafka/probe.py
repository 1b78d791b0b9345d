#!/usr/bin/env python3
"""Waits until a Kafka-protocol broker answers Metadata with enough brokers.

    probe.py HOST:PORT [--brokers N] [--timeout SECONDS]

Sends Metadata v1 with an empty topic list (brokers only) over a plain TCP
connection and reads the broker array's length. Exits 0 once N brokers are
listed, 1 at the timeout with the last error. Used for both Apache Kafka and
Sluice, so both are called ready by the same test. A bare TCP connect is not
enough: Kafka accepts connections before its metadata names every broker.
"""
import argparse
import socket
import struct
import sys
import time

METADATA = 3
# A response longer than this is not a broker-list answer to our request.
RESPONSE_MAX = 1 << 20


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return buf


def broker_count(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        client_id = b"sluice-probe"
        # Header v1: api key, version, correlation id, client id; then
        # Metadata v1's body: topics = [] (int32 0), so no topic is listed.
        body = struct.pack(">hhih", METADATA, 1, 7, len(client_id)) + client_id
        body += struct.pack(">i", 0)
        s.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", read_exact(s, 4))
        if size < 8 or size > RESPONSE_MAX:
            raise ValueError(f"response size {size}")
        resp = read_exact(s, size)
        correlation, brokers = struct.unpack(">ii", resp[:8])
        if correlation != 7:
            raise ValueError(f"correlation id {correlation}")
        return brokers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bootstrap")
    p.add_argument("--brokers", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    host, _, port = a.bootstrap.rpartition(":")
    deadline = time.monotonic() + a.timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            n = broker_count(host, int(port))
            if n >= a.brokers:
                return 0
            last = f"{n} of {a.brokers} brokers in Metadata"
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.5)
    print(f"probe {a.bootstrap}: not ready after {a.timeout:.0f} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
