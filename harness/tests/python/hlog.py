"""Reads a sluice-bench interval log with HdrHistogram's Python
implementation and prints, per interval, `tag second count p50`, then
`start <StartTime>`: what the reference reader makes of the file."""

import sys

from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram


def main(path):
    reference = HdrHistogram(1, 600_000_000_000, 3)
    reader = HistogramLogReader(path, reference)
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        start_s = h.get_start_time_stamp() / 1000.0 - reader.start_time_sec
        print(h.get_tag(), round(start_s), h.get_total_count(),
              h.get_value_at_percentile(50))
    print("start", reader.start_time_sec)


if __name__ == "__main__":
    main(sys.argv[1])
