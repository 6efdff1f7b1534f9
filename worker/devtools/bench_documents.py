"""Document rendering throughput and memory, in one process: ``python -m worker.devtools.bench_documents``.

Renders every finalized invoice and credit note of the database named by
``BILLING_DATABASE_URL`` (``billing demo`` makes 11, one of 250 lines) ``--rounds`` times,
without storing anything, and prints documents per second and the process's resident memory
(peak, and its growth over the rounds: bounded memory means no growth per document).
"""

from __future__ import annotations

import argparse
import resource
import time

from sqlmodel import col, select

from worker.db import read_session
from worker.documents import render
from worker.documents.model import load
from worker.tables import CreditNote, Invoice


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with read_session() as session:
        ids = list(session.exec(select(Invoice.id).where(col(Invoice.number).is_not(None))))
        ids += list(session.exec(select(CreditNote.id)))
        sources = [load(session, object_id) for object_id in ids]
    render(sources[0])  # warm-up: fonts, templates
    after_warm_up = _rss_mib()
    rendered, started = 0, time.perf_counter()
    sizes = []
    for _ in range(options.rounds):
        for source in sources:
            began = time.perf_counter()
            pdf = render(source).pdf
            sizes.append((len(source.lines), time.perf_counter() - began, len(pdf)))
            rendered += 1
    elapsed = time.perf_counter() - started
    largest = max(sizes)
    rate = rendered / elapsed
    print(f"documents rendered: {rendered} in {elapsed:.1f} s = {rate:.2f} documents/s (one process)")
    print(f"largest: {largest[0]} lines, {largest[1]:.2f} s, {largest[2] / 1024:.0f} KiB")
    small = [s[1] for s in sizes if s[0] <= 10]
    if small:
        print(f"up to 10 lines: median {sorted(small)[len(small) // 2] * 1000:.0f} ms per document")
    print(f"RSS after warm-up {after_warm_up:.0f} MiB, at the end {_rss_mib():.0f} MiB,"
          f" peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
