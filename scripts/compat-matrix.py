#!/usr/bin/env python3
"""The client compatibility matrix in README.md, made from test results.

Each client test of engine/tests marks, once all its checks have passed,
the features it exercised (common::passed: an empty file named
CLIENT=FEATURE under the tests' temporary directory, target/tmp/compat).
This script turns those marks into the table between the compat-matrix
markers of README.md:

  scripts/compat-matrix.py --write   rewrite the table from the marks
  scripts/compat-matrix.py --check   fail if the table and the marks differ
                                     (what .ci/run does after cargo test)
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- compat-matrix:start -->"
END = "<!-- compat-matrix:end -->"

# Rows and columns in the order shown; a mark naming anything else is an
# error, so a typo in a test cannot vanish from the table.
CLIENTS = [
    ("librdkafka", "librdkafka (Rust rdkafka; confluent-kafka for KIP-848)"),
    ("kcat", "kcat"),
    ("java", "Java client (kafka-clients 4.4)"),
    ("kafka-streams", "Kafka Streams 4.4"),
    ("kafka-tools", "Kafka's command-line tools 4.4"),
    ("franz-go", "franz-go"),
    ("sarama", "sarama"),
    ("kafka-python", "kafka-python"),
    ("aiokafka", "aiokafka"),
    ("kafkajs", "KafkaJS"),
]
FEATURES = [
    ("produce", "produce"),
    ("consume", "consume"),
    ("groups-classic", "groups, classic"),
    ("groups-kip848", "groups, KIP-848"),
    ("admin", "admin"),
    ("idempotence", "idempotence"),
    ("transactions", "transactions"),
    ("security", "security"),
]


def marks_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "tmp" / "compat"


def read_marks(folder: Path) -> set:
    clients = {c for c, _ in CLIENTS}
    features = {f for f, _ in FEATURES}
    marks = set()
    if not folder.is_dir():
        sys.exit(f"{folder}: no test marks; run cargo test --workspace first")
    for entry in sorted(folder.iterdir()):
        client, sep, feature = entry.name.partition("=")
        if not sep or client not in clients or feature not in features:
            sys.exit(f"{entry}: not a known CLIENT=FEATURE mark")
        marks.add((client, feature))
    return marks


def render(marks: set) -> str:
    lines = [
        "| client | " + " | ".join(name for _, name in FEATURES) + " |",
        "|---" * (len(FEATURES) + 1) + "|",
    ]
    for client, name in CLIENTS:
        cells = ["yes" if (client, f) in marks else "—" for f, _ in FEATURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument("--marks", type=Path, default=None)
    args = parser.parse_args()
    table = render(read_marks(args.marks or marks_dir()))
    text = README.read_text()
    try:
        head, rest = text.split(START + "\n", 1)
        current, tail = rest.split(END, 1)
    except ValueError:
        sys.exit(f"{README}: the {START} and {END} markers are missing")
    if args.write:
        README.write_text(head + START + "\n" + table + END + tail)
        return
    if current != table:
        sys.stderr.write(
            "README.md's compatibility matrix differs from what the tests showed;\n"
            "run scripts/compat-matrix.py --write after cargo test.\n"
            f"README has:\n{current}\nthe tests showed:\n{table}"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
