"""Child process for the crash tests: builds, adds, deletes and compacts an index forever, journaling.

Before each commit it appends {"intent": g, "live": ids} (the live ids generation g will hold) to the
journal and fsyncs it; after the commit, {"done": g}. The parent SIGKILLs it at random instants.
Usage: python crash_worker.py INDEX_PATH JOURNAL SEED
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import plaidx  # noqa: E402
from plaidx.errors import IndexFormatError  # noqa: E402

DIM = 16


def docs(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(3, 12)), DIM)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def main() -> None:
    path, journal_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    # A worker killed inside a write leaves its last line unfinished (a long record takes more than one write
    # call); cut it off, so this worker's first line does not run on from it and the journal stays one JSON
    # record a line.
    with open(journal_path, "ab+") as f:
        f.seek(0)
        text = f.read()
        f.truncate(text.rfind(b"\n") + 1)
    journal = open(journal_path, "a")

    def log(record: dict) -> None:
        journal.write(json.dumps(record) + "\n")
        journal.flush()
        os.fsync(journal.fileno())

    try:
        index = plaidx.Index.open(path)
    except IndexFormatError:
        batch = docs(rng, 40)
        log({"intent": 1, "live": list(range(len(batch)))})
        index = plaidx.Index.build(path, batch, nbits=2, nlist=16, overwrite=True)
        log({"done": index.generation})
    while True:
        live = index.ids.tolist()
        gen = index.generation + 1
        op = rng.choice(["add", "add", "delete", "compact"])
        if op == "add":
            batch = docs(rng, int(rng.integers(1, 20)))
            nxt = index._snap.manifest["next_id"]
            log({"intent": gen, "live": live + list(range(nxt, nxt + len(batch)))})
            index.add(batch)
        elif op == "delete" and len(live) > 5:
            gone = set(rng.choice(live, size=int(rng.integers(1, len(live) // 3 + 1)), replace=False).tolist())
            log({"intent": gen, "live": [i for i in live if i not in gone]})
            index.delete(sorted(gone))
        elif op == "compact" and index._snap.n_deleted:
            log({"intent": gen, "live": live})
            index.compact()
        else:
            continue
        log({"done": index.generation})


if __name__ == "__main__":
    main()
