#!/usr/bin/env python3
"""Convert statsmodels' monthly sunspot table to data/sunspots_monthly.csv.

Reads statsmodels/datasets/sunspots/src/sunspots_monthly.dat straight out of a
statsmodels wheel (or from an extracted .dat file) and writes one row per
month: `date,sunspots` with date as YYYY-MM and the value exactly as printed
in the source table (one decimal).

Usage
  pip download --no-deps statsmodels -d /tmp/sm
  python3 tools/sunspots_to_csv.py /tmp/sm/statsmodels-*.whl [--out data/sunspots_monthly.csv]
"""

import argparse
import re
import sys
import zipfile

MEMBER = "statsmodels/datasets/sunspots/src/sunspots_monthly.dat"


def read_source(path):
    if path.endswith(".whl") or path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            return z.read(MEMBER).decode("ascii")
    with open(path, encoding="ascii") as f:
        return f.read()


def parse(text):
    rows = []
    prev_year = None
    for line in text.splitlines():
        if not re.match(r"^\d{4}\s", line):
            continue  # title, column header, rules, blank lines, footnotes
        fields = line.split()
        year, values = int(fields[0]), fields[1:]
        assert 1 <= len(values) <= 12, line
        assert prev_year is None or year == prev_year + 1, f"gap before {year}"
        if prev_year is not None:
            assert len(rows[-1][1]) == 12, "short year in the middle"
        for v in values:
            float(v)  # must be numeric
        rows.append((year, values))
        prev_year = year
    out = []
    for year, values in rows:
        for month, v in enumerate(values, start=1):
            out.append((f"{year:04d}-{month:02d}", v))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="statsmodels wheel (.whl) or sunspots_monthly.dat")
    ap.add_argument("--out", default="data/sunspots_monthly.csv")
    args = ap.parse_args()
    rows = parse(read_source(args.source))
    with open(args.out, "w", newline="\n") as f:
        f.write("date,sunspots\n")
        for d, v in rows:
            f.write(f"{d},{v}\n")
    print(f"wrote {len(rows)} rows ({rows[0][0]} .. {rows[-1][0]}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
