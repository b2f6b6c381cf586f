"""Rebuild a cached benchmark index with this checkout's engine and compare it, array by array, with the stored one.

For a change that promises the same index faster (a kernel that gives the same codes): the same collection and
build options as the stored run (read from its build.json and manifest), built by ``run_plaidx.py build`` in its
own process, then each array's crc32 and shape from both manifests side by side. Where every array matches, the
stored run's search figures (recall, latency) hold for the new build unchanged.

    .venv/bin/python benchmarks/bench_rebuild.py --run results/cache/runs/<run>/<engine folder> \
        --coll results/cache/<collection> --tag <tag>

writes ``results/rebuild_<tag>.json/.md``; the new index goes to ``results/cache/runs/rebuild_<tag>/index``
(removed afterwards unless ``--keep``). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import write_stamped_report  # noqa: E402
from collection import RESULTS_DIR  # noqa: E402


def manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a stored run folder (build.json and index/)")
    ap.add_argument("--coll", required=True, help="its collection folder")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the new index")
    args = ap.parse_args(argv)
    run = Path(args.run)
    old_build = json.loads((run / "build.json").read_text())
    old_man = manifest(run / "index")
    opts = old_man["build"]
    out_dir = RESULTS_DIR / "cache" / "runs" / f"rebuild_{args.tag}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    cmd = [sys.executable, str(HERE / "run_plaidx.py"), "build", "--coll", args.coll, "--index", str(out_dir / "index"),
           "--out", str(out_dir / "build.json"), "--nbits", str(old_man["nbits"]), "--nlist", str(old_man["nlist"]),
           "--kmeans-niters", str(opts["kmeans_niters"]), "--seed", str(opts["seed"])]
    if old_build.get("keep_vectors"):
        cmd += ["--keep-vectors", old_build["keep_vectors"]]
    load0 = os.getloadavg()
    subprocess.run(cmd, check=True)
    new_build = json.loads((out_dir / "build.json").read_text())
    new_man = manifest(out_dir / "index")
    names = sorted(set(old_man["arrays"]) | set(new_man["arrays"]))
    same = {n: (old_man["arrays"].get(n, {}).get("crc32"), old_man["arrays"].get(n, {}).get("shape")) ==
            (new_man["arrays"].get(n, {}).get("crc32"), new_man["arrays"].get(n, {}).get("shape")) for n in names}
    old_t, new_t = old_man["build"].get("timings", {}), new_man["build"].get("timings", {})
    body = [f"{new_man['n_tokens']:,} tokens, nlist {new_man['nlist']:,}, nbits {new_man['nbits']}, keep_vectors "
            f"{old_build.get('keep_vectors')}; the stored index was built at the commit of its run's report.", "",
            "| | stored build | this build |", "|---|---:|---:|",
            f"| build s | {old_build['build_s']:,.1f} | {new_build['build_s']:,.1f} |",
            f"| build CPU s | {old_build['build_cpu_s']:,.1f} | {new_build['build_cpu_s']:,.1f} |",
            f"| peak RSS MiB | {old_build['peak_rss_mb']:,.0f} | {new_build['peak_rss_mb']:,.0f} |"]
    body += [f"| {k} | {old_t.get(k, '-')} | {new_t.get(k, '-')} |" for k in sorted(set(old_t) | set(new_t))]
    body += ["", f"Arrays identical (crc32 and shape): {sum(same.values())} of {len(same)}"
             + ("" if all(same.values()) else f"; different: {', '.join(n for n, s in same.items() if not s)}") + "."]
    write_stamped_report(f"rebuild_{args.tag}", f"Rebuild of `{run.parent.name}/{run.name}` ({args.tag})", body,
                         {"stored": old_build, "new": new_build, "timings_stored": old_t, "timings_new": new_t,
                          "same": same}, 2, list(load0))
    if not args.keep:
        shutil.rmtree(out_dir)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
