"""Draw the benchmark pictures of the docs (docs/img/*.png) from the JSON results in benchmarks/results.

    python benchmarks/plots.py [--results benchmarks/results] [--out docs/img]

Every figure is computed from the result files named in its caption (SOURCES below); nothing is typed in
by hand. Rerun it after a benchmark replaces one of them. Needs matplotlib (the ``docs`` or ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Which result file each figure reads: the current report of each benchmark and collection.
SOURCES = {
    "engine_synthetic": "engine_synthetic_10000_three_way_int8.json",
    "engine_synthetic_10m": "engine_synthetic_100000_fused.json",
    "engine_synthetic_32m": "engine_synthetic_1000000_fused.json",
    "engine_scifact": "engine_scifact_5183_int8.json",
    "grid_synthetic": "search_params_synthetic_10000.json",
    "grid_scifact": "search_params_scifact.json",
    "converted": "convert_synthetic_10000.json",
    "gpu_1m": "gpu_synthetic_10000.json",
    "gpu_10m": "gpu_synthetic_100000.json",
}

LABELS = {"plaidx": "plaidx", "plaid": "Stanford PLAID 0.2.22", "fastplaid": "fast-plaid 1.7"}
COLORS = {"plaidx": "#1f77b4", "plaid": "#d62728", "fastplaid": "#2ca02c"}
MARKERS = {"plaidx": "o", "plaid": "s", "fastplaid": "^"}


def load(results: Path, key: str) -> dict[str, Any]:
    path = results / SOURCES[key]
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run its benchmark (see benchmarks/results/README.md) or update "
                         "SOURCES in benchmarks/plots.py")
    return json.loads(path.read_text())


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, recall) points no other point beats on both, by latency."""
    best: list[tuple[float, float]] = []
    for lat, rec in sorted(points):
        if not best or rec > best[-1][1]:
            best.append((lat, rec))
    return best


def _engine_points(run: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    out = []
    for r in run["rows"]:
        if r.get("error") or r.get("p50_ms") is None:
            continue
        exact = bool(r.get("params", {}).get("exact"))
        label = "exhaustive" if exact else "defaults"
        out.append((r["engine"], label, float(r["p50_ms"]), float(r["recall_at_k"])))
    return out


def _plot_same_index(ax: Any, run: dict[str, Any]) -> None:
    """colbert-ai and plaidx searching the same compressed index (colbert-ai's, converted losslessly)."""
    for r in run["search"]:
        engine = "plaid" if r["engine"].startswith("colbert") else "plaidx"
        params = r["params"] if isinstance(r["params"], str) else "its defaults"
        label = {"its defaults": "Stanford PLAID (colbert-ai 0.2.22), its defaults",
                 "defaults": "plaidx, its defaults", "plaid_settings": "plaidx at PLAID's settings"}.get(params, params)
        ax.scatter([r["p50_ms"]], [r["recall@10"]], marker=MARKERS[engine], s=60, color=COLORS[engine],
                   facecolors="none" if params == "plaid_settings" else COLORS[engine], label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query, ms (log scale; 2 threads, load average ~28)")
    ax.set_ylabel("recall@10 vs exact MaxSim")
    ax.set_title(f"the same index bytes: colbert-ai's index, converted ({run['date'][:10]})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)


def plot_recall_latency(results: Path, out: Path, plt: Any) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    _plot_same_index(axes[2], load(results, "converted"))
    panels = [("engine_synthetic", "grid_synthetic", "synthetic, 1.0M tokens, d 128"),
              ("engine_scifact", "grid_scifact", "SciFact (MiniLM), 1.2M tokens, d 384")]
    for ax, (run_key, grid_key, title) in zip(axes[:2], panels):
        run, grid = load(results, run_key), load(results, grid_key)
        curve = pareto([(r["p50_ms"], r["recall"]) for r in grid["rows"] if r.get("p50_ms") is not None])
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "-", color=COLORS["plaidx"], alpha=0.6,
                label=f"plaidx, parameter grid, best settings (build and code of {grid['date'][:16].replace('T', ' ')})")
        for engine, label, lat, rec in _engine_points(run):
            label = f"{label} ({run['created'][:16].replace('T', ' ')})"
            ax.scatter([lat], [rec], marker=MARKERS.get(engine, "x"), s=60, color=COLORS.get(engine, "k"),
                       label=f"{LABELS.get(engine, engine)}, {label}", zorder=3,
                       facecolors="none" if label.startswith("exhaustive") else COLORS.get(engine, "k"))
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query, ms (log scale; 2 threads)")
        ax.set_ylabel("recall@10 vs exact MaxSim")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle("Recall against latency (upper left is better)", fontsize=11)
    fig.text(0.01, 0.01, f"sources: {SOURCES['engine_synthetic']}, {SOURCES['grid_synthetic']}, "
             f"{SOURCES['engine_scifact']}, {SOURCES['grid_scifact']}, {SOURCES['converted']}", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return _save(fig, out / "recall_latency.png", plt)


def _build_rows(results: Path) -> list[tuple[str, str, float, float, float, float]]:
    """(engine, collection, tokens, build s, build peak RSS MiB, bytes per token), one per engine and run."""
    rows = []
    for key, name in (("engine_synthetic", "synthetic 1M"), ("engine_scifact", "SciFact"),
                      ("engine_synthetic_10m", "synthetic 10M"), ("engine_synthetic_32m", "synthetic 32M")):
        run = load(results, key)
        seen = set()
        for r in run["rows"]:
            if r.get("error") or r["engine"] in seen or r.get("build_s") is None:
                continue
            seen.add(r["engine"])
            rows.append((r["engine"], name, float(run["collection"]["n_tokens"]), float(r["build_s"]),
                         float(r["build_peak_rss_mb"]), float(r["bytes_per_token"])))
    return rows


def plot_build(results: Path, out: Path, plt: Any) -> Path:
    rows = _build_rows(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, col, ylabel in ((axes[0], 3, "build time, s (wall clock, 2 threads)"),
                            (axes[1], 4, "peak memory of the build, MiB (RSS)")):
        for engine in ("plaidx", "plaid", "fastplaid"):
            mine = sorted((r for r in rows if r[0] == engine and r[1] != "SciFact"), key=lambda r: r[2])
            if mine:
                ax.plot([r[2] for r in mine], [r[col] for r in mine], "-" + MARKERS[engine], color=COLORS[engine],
                        label=f"{LABELS[engine]}, synthetic d 128")
            sci = [r for r in rows if r[0] == engine and r[1] == "SciFact"]
            for r in sci:
                ax.scatter([r[2]], [r[col]], marker=MARKERS[engine], s=70, facecolors="none",
                           edgecolors=COLORS[engine], label=f"{LABELS[engine]}, SciFact d 384")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("index size, token embeddings (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Build cost against index size (lower is better)", fontsize=11)
    fig.text(0.01, 0.01, "sources: " + ", ".join(SOURCES[k] for k in ("engine_synthetic", "engine_scifact",
                                                                      "engine_synthetic_10m", "engine_synthetic_32m")),
             fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return _save(fig, out / "build_cost.png", plt)


def plot_bytes_per_token(results: Path, out: Path, plt: Any) -> Path:
    rows = _build_rows(results)
    collections = ["synthetic 1M", "SciFact", "synthetic 10M", "synthetic 32M"]
    engines = ["plaidx", "plaid", "fastplaid"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for j, engine in enumerate(engines):
        xs, ys = [], []
        for i, c in enumerate(collections):
            match = [r for r in rows if r[0] == engine and r[1] == c]
            if match:
                xs.append(i + (j - 1) * width)
                ys.append(match[0][5])
        bars = ax.bar(xs, ys, width, color=COLORS[engine], label=LABELS[engine])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(collections)), ["synthetic\n1M tokens, d 128", "SciFact\n1.2M tokens, d 384",
                                            "synthetic\n10M tokens, d 128", "synthetic\n32M tokens, d 128"])
    ax.set_ylabel("bytes per token on disk (nbits 2)")
    ax.set_title("Index size per token embedding (lower is better; peers measured at 1M and SciFact)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.text(0.01, 0.01, "sources: the engine_* files of build_cost.png", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out / "bytes_per_token.png", plt)


def plot_gpu(results: Path, out: Path, plt: Any) -> Path:
    runs = [("1M tokens", load(results, "gpu_1m")), ("10M tokens", load(results, "gpu_10m"))]
    metrics = [("p50_ms", "single query p50, ms", False), ("qps_batch", "batched queries per second", True),
               ("exact_ms_per_query", "exhaustive MaxSim, ms per query", False)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    machine = runs[0][1]["machine"]
    for ax, (key, title, higher) in zip(axes, metrics):
        xs = range(len(runs))
        cpu = [r["cpu"][key] for _, r in runs]
        gpu = [r["cuda"][key] for _, r in runs]
        b1 = ax.bar([x - 0.2 for x in xs], cpu, 0.4, color="#7f7f7f", label=f"CPU, {machine['cpu_count']} cores")
        b2 = ax.bar([x + 0.2 for x in xs], gpu, 0.4, color="#76b900", label=machine.get("gpu", "GPU"))
        ax.bar_label(b1, fmt="%.3g", fontsize=7)
        ax.bar_label(b2, fmt="%.3g", fontsize=7)
        ax.set_xticks(list(xs), [name for name, _ in runs])
        ax.set_yscale("log")
        ax.set_title(f"{title} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("GPU against CPU on the same index, queries and defaults", fontsize=11)
    fig.text(0.01, 0.01, f"sources: {SOURCES['gpu_1m']}, {SOURCES['gpu_10m']}", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.93))
    return _save(fig, out / "gpu_cpu.png", plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no timestamp in the metadata, so an unchanged result gives an unchanged file
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, out = Path(args.results), Path(args.out)
    for fn in (plot_recall_latency, plot_build, plot_bytes_per_token, plot_gpu):
        print(f"wrote {fn(results, out, plt)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
