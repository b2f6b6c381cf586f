"""The ``plaidx`` command line: index, search, info, eval and serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..engine.params import MAX_KNOB
from ..errors import CheckpointError, IndexFormatError, PlaidxError
from ..rag import Hit, IndexFolder
from ..rag.folder import CONFIG_FILE
from ..rag.model import DEFAULT_NBITS
from ..server.net import check_index_name, is_loopback
from .corpus import read_corpus, read_lines, text_lines
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from .evaluate import cmd_eval
from .folders import load_model, open_folder, search_params

_EPILOG = """exit codes:
  0    success
  1    the command failed (damaged index, problems found by info --verify, search or build error)
  2    wrong usage or input (missing path, malformed corpus, bad option)
  130  interrupted"""


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace) -> int:
    import re

    from ..rag import RAGPretrainedModel

    out = Path(args.index)
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$", out.name):
        raise CliError(f"index folder name {out.name!r}: use letters, digits, '.', '_' or '-' (not starting with "
                       "'.' or '-')")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / CONFIG_FILE).is_file():
            raise CliError(f"{str(out)!r} exists and is not a plaidx index; choose a new folder")
        if not args.overwrite:
            raise CliError(f"an index already exists at {str(out)!r}; pass --overwrite to replace it")
    _check_writable(out.parent)  # before the corpus and the model: a wrong path costs nothing
    if args.device not in (None, "cpu"):  # likewise a GPU that is not there
        from ..engine.gpu import resolve_device

        try:
            resolve_device(args.device, purpose="build")
        except (ValueError, RuntimeError) as exc:
            raise CliError(f"--device: {exc}") from None
    fields = [f for v in args.index_metadata or [] for f in v.split(",") if f] or None
    if fields:
        from ..rag.where import check_fields

        try:
            check_fields(fields, "--index-metadata")
        except ValueError as exc:
            raise CliError(f"--index-metadata: {exc}") from None
    ids, texts, metas = read_corpus(args.source, id_field=args.id_field, text_field=args.text_field,
                                    title_field=args.title_field or None, limit=args.limit)
    if args.shards > len(ids):  # before anything is built or replaced
        raise CliError(f"--shards {args.shards}: the corpus holds {len(ids)} documents; use at most that many shards")
    _say(args, f"corpus: {len(ids)} documents from {args.source}")
    t0 = time.perf_counter()
    rag = RAGPretrainedModel.from_pretrained(args.model, verbose=0 if args.quiet else 1,
                                             index_root=str(out.parent))
    model = rag.model
    _say(args, f"model: {model.name_or_path} (dim {model.dim}, query length {model.query_length}, document "
               f"length {model.document_length}) loaded in {time.perf_counter() - t0:.1f}s")
    length = args.max_document_length or 256
    limit = getattr(model, "max_length", None)
    if limit and length > limit and args.max_document_length is None:
        length = limit  # the default, for a model that reads fewer tokens
    elif limit and length > limit:
        print(f"plaidx index: warning: --max-document-length {length} is more than the {limit} tokens "
              f"{model.name_or_path} reads; passages are clamped to {limit} tokens", file=sys.stderr, flush=True)
        length = limit
    _say(args, f"indexing: nbits {args.nbits or f'{DEFAULT_NBITS} (default)'}, passages of at most "
               f"{length} tokens{'' if args.split else ' (documents not split; longer ones are truncated)'}")
    t0 = time.perf_counter()
    rag.index(texts, document_ids=ids, document_metadatas=metas, index_name=out.name, overwrite_index=True,
              max_document_length=length, split_documents=args.split, nbits=args.nbits, device=args.device,
              residual_codec=args.residual_codec, metadata_indexes=fields, keep_vectors=args.keep_vectors,
              shards=args.shards)  # shards: the same passages and bytes, split before the folder goes in place
    with open_folder(out) as folder:
        info = folder.describe()
    print(f"indexed {info['documents']} documents as {info['passages']} passages ({info['tokens']} tokens) in "
          f"{time.perf_counter() - t0:.1f}s -> {out} ({_size(info['bytes_on_disk'])}, nbits {info['nbits']}, "
          f"nlist {info['nlist']}, model {info['model']}, document length {info['document_length']})")
    return EXIT_OK


def _check_writable(folder: Path) -> None:
    """The folder that will hold a new index exists (created if need be) and can be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the folder {str(folder)!r} for the index ({(exc.strerror or '').lower()}); "
                       "choose an index path in a folder you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"the folder {str(folder)!r} is not writable; choose an index path in a folder you can "
                       "write to")


def _parse_doc_ids(values: Optional[list[str]], folder: IndexFolder) -> Optional[Any]:
    """The engine passages of the ``--doc-ids`` documents (``IndexFolder.passage_ids``); unknown ids are a
    usage error naming them."""
    if not values:
        return None
    ids: list[Any] = []
    for v in values:
        if v.lstrip().startswith("["):  # a JSON list: ids that hold commas
            try:
                listed = json.loads(v)
            except json.JSONDecodeError as exc:
                raise CliError(f"--doc-ids: {v!r} starts with '[' but is not a JSON list ({exc.msg})") from None
            if not isinstance(listed, list) or not all(isinstance(x, (str, int)) for x in listed):
                raise CliError(f"--doc-ids: a JSON list of ids must hold strings or integers, got {v!r}")
            ids += [str(x) if isinstance(x, str) else x for x in listed]
        else:  # comma-separated; ids may hold spaces (those of a folder of files do)
            ids += [x.strip() for x in v.split(",") if x.strip()]
    int_ids = folder.store is None or folder.store.id_type == "int"
    if int_ids:
        try:
            ids = [int(x) for x in ids]
        except ValueError:
            raise CliError(f"--doc-ids: this index uses integer ids, got {ids[:5]}") from None
    try:
        allowed = folder.passage_ids(ids)
    except (KeyError, TypeError) as exc:
        raise CliError(f"--doc-ids: {exc.args[0] if exc.args else exc}") from None
    if folder.store is None:
        import numpy as np

        unknown = np.setdiff1d(allowed, folder.engine.ids)
        if unknown.size:
            raise CliError(f"--doc-ids: unknown document ids {unknown[:10].tolist()} (the index holds "
                           f"{len(folder.engine)} documents)")
    return allowed


def _filter(args: argparse.Namespace, folder: IndexFolder) -> Optional[Any]:
    """The engine passages ``--doc-ids`` and ``--where`` allow (both, when both are given), or None."""
    passages = _parse_doc_ids(args.doc_ids, folder)
    if args.where is None:
        return passages
    try:
        where = json.loads(args.where)
    except json.JSONDecodeError as exc:
        raise CliError(f"--where: not JSON ({exc.msg} at column {exc.colno}); e.g. --where "
                       "'{\"lang\": \"en\", \"year\": {\"$gte\": 2020}}'") from None
    try:
        matched = folder.allowed(None, where)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--{exc}") from None
    if passages is None:
        return matched
    import numpy as np

    return np.intersect1d(passages, matched)


def _queries(args: argparse.Namespace) -> list[str]:
    queries = list(args.query)
    if queries == ["-"]:
        from .corpus import _stdin_bytes

        queries = [ln.strip() for ln in text_lines(_stdin_bytes(), "<stdin>") if ln.strip()]
    if args.queries_file:
        queries += read_lines(args.queries_file, "--queries-file")
    if not queries or any(not q.strip() for q in queries):
        raise CliError("give at least one non-empty query (arguments, '-' for stdin, or --queries-file)")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    queries = _queries(args)
    if args.k < 1:
        raise CliError(f"-k must be a positive integer, got {args.k}")
    how = search_params(args)
    folder = open_folder(args.index)
    try:
        passages = _filter(args, folder)
        model = load_model(args.model, folder, args.device)
        if model.dim != folder.engine.dim:
            raise CliError(f"the model {model.name_or_path!r} makes {model.dim}-d vectors but the index holds "
                           f"{folder.engine.dim}-d ones; pass the model that built it with --model")
        from ..rag.queries import encode_queries

        q = encode_queries(model, queries)
        t0 = time.perf_counter()
        results = [[hit_dict(h, r) for r, h in enumerate(row)]
                   for row in folder.search(q, args.k, passages=passages, **how)]
        dt = time.perf_counter() - t0
    finally:
        folder.close()
    if args.json:
        print(json.dumps([{"query": qt, "results": r} for qt, r in zip(queries, results)], ensure_ascii=False,
                         indent=2))
        return EXIT_OK
    for qt, hits in zip(queries, results):
        print(f"query: {qt}")
        if not hits:
            print("  (no results)")
        for h in hits:
            doc = "" if h["document_id"] is None else str(h["document_id"])
            content = " ".join((h["content"] or "").split())
            if len(content) > args.width:
                content = content[: max(0, args.width - 3)] + "..."
            print(f"  {h['rank']:>3}  {h['score']:8.3f}  {doc[:24]:<24}  {content}")
        print()
    print(f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} searched in {dt * 1000:.1f} ms", file=sys.stderr)
    return EXIT_OK


def hit_dict(hit: Hit, rank: int) -> dict[str, Any]:
    """One result as ``plaidx search --json`` prints it (``id`` is the engine's passage id)."""
    return {"rank": rank + 1, "score": hit.score, "id": hit.passage_id, "document_id": hit.document_id,
            "passage_id": hit.passage_id if hit.content is not None else None, "content": hit.content,
            "document_metadata": hit.metadata}


def verify_folder(path: str) -> tuple[Optional[IndexFolder], list[str]]:
    """Open with no checks, then verify every checksum and the document store; ``(folder or None, problems)``."""
    try:
        folder = open_folder(path, verify="none", reconcile=False)
    except CliError:
        raise
    except (PlaidxError, OSError, ValueError) as exc:
        return None, [f"cannot open the index: {exc}"]
    return folder, folder.verify()


def cmd_info(args: argparse.Namespace) -> int:
    problems: list[str] = []
    if args.verify:
        folder, problems = verify_folder(args.index)
        if folder is None:
            _print_problems(args, problems, None)
            return EXIT_FAILURE
    else:
        folder = open_folder(args.index)
    try:
        info = folder.describe()
    finally:
        folder.close()
    if args.verify:
        info["problems"] = problems
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        rows = [("path", info["path"]), ("kind", "RAG index (engine + document store)" if info["kind"] == "rag"
                                         else "engine folder (no document store)"),
                ("documents", info["documents"]), ("passages", info["passages"]), ("tokens", info["tokens"]),
                ("nlist", info["nlist"]), ("nbits", _nbits_text(info)),
                ("residual codec", info.get("residual_codec") or "scalar"),
                ("kept vectors", info.get("keep_vectors") or "none (plaidx index --keep-vectors int8 keeps them)"),
                ("dim", info["dim"]),
                ("model", info["model"] or "(not recorded)"),
                ("size on disk", f"{_size(info['bytes_on_disk'])} ({info['bytes_on_disk']} bytes)"),
                ("format version", info["format_version"]), ("generation", info["generation"])]
        if info["kind"] == "rag":
            rows.append(("metadata indexes", ", ".join(info["metadata_indexes"]) or "none (plaidx index "
                                                                                    "--index-metadata FIELD adds one)"))
        if info["deleted_pending_compaction"]:
            rows.append(("deleted, not compacted", info["deleted_pending_compaction"]))
        d = info["drift"]
        if d.get("added_tokens"):
            rows.append(("drift", f"added residual norm {d['added_residual_norm']:.4f} vs build "
                                  f"{d['build_residual_norm']:.4f} (ratio {d['ratio']:.2f}, threshold "
                                  f"{d['threshold']})" if d.get("ratio") is not None else "n/a"))
        else:
            rows.append(("drift", "none (no documents added since the build)"))
        width = max(len(r[0]) for r in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        if d.get("recommend_recluster"):
            print("warning: added documents drift from the centroids; Index.recluster() (or a rebuild) "
                  "would restore recall", file=sys.stderr)
    if args.verify:
        _print_problems(args, problems, info)
        return EXIT_FAILURE if problems else EXIT_OK
    return EXIT_OK


def _nbits_text(info: dict[str, Any]) -> str:
    """nbits and how it was chosen (RAG indexes record it)."""
    chosen = info.get("index_config", {}).get("nbits_chosen")
    if chosen == "default":
        return f"{info['nbits']} (the default for RAG indexes; plaidx index --nbits N chooses)"
    if chosen == "given":
        return f"{info['nbits']} (chosen at indexing)"
    return str(info["nbits"])


def _print_problems(args: argparse.Namespace, problems: list[str], info: Optional[dict]) -> None:
    if info is None and args.json:
        print(json.dumps({"path": str(args.index), "problems": problems}, indent=2))
    if problems:
        print(f"verify: {len(problems)} problem{'s' if len(problems) > 1 else ''} found:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    elif not args.json:
        print("verify: OK (every checksum matches; document store consistent)")


def _parse_index_specs(specs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        if not name or not path:
            raise CliError(f"--index {spec!r}: expected NAME=PATH or PATH")
        if name in out:
            raise CliError(f"--index: the name {name!r} is given twice; name them NAME=PATH")
        try:
            check_index_name(name)
        except ValueError as exc:
            raise CliError(f"--index {spec!r}: {exc}") from None
        open_folder(path).close()
        out[name] = path
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("PLAIDX_API_KEY") or None
    if not api_key and not is_loopback(args.host):
        raise CliError(f"refusing to listen on {args.host!r} without an API key: pass --api-key KEY or set "
                       "PLAIDX_API_KEY (clients then send 'Authorization: Bearer KEY'), or listen on 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {args.port}")
    from ..errors import MissingExtraError, require

    try:  # before opening any index or loading a model
        for module in ("fastapi", "uvicorn"):
            require(module, "server", "plaidx serve")
    except MissingExtraError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    _serve_executor(args)  # before any sharded index is opened: the folders read it
    indexes = _parse_index_specs(args.index or [])
    from ..server.app import Limits, serve
    limits = Limits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, max_tokens=args.max_tokens)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    _check_port_free(args.host, args.port)
    _say(args, f"serving {len(indexes)} index(es) {sorted(indexes)} on http://{args.host}:{args.port} "
               f"(auth {'on' if api_key else 'off'}); OpenAPI at /docs")
    serve(indexes, host=args.host, port=args.port, api_key=api_key, log_level=args.log_level, model=args.model,
          model_name=args.model_name, limits=limits, search_threads=args.search_threads)
    return EXIT_OK


def _check_port_free(host: str, port: int) -> None:
    """A clear error before the server starts when ``host:port`` cannot be listened on (uvicorn would exit 3)."""
    import socket

    if port == 0:
        return
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what uses the port or pass "
                       "--port with another", EXIT_FAILURE) from None


def _serve_executor(args: argparse.Namespace) -> None:
    """Where the shards of served sharded indexes are searched: in this process, or by Ray actors on a
    running cluster (joined, never started: ``--ray-address`` or ``RAY_ADDRESS`` names it)."""
    from ..distributed.executors import EXECUTOR_ENV

    if args.ray_address and args.executor != "ray":
        raise CliError("--ray-address is for --executor ray; add --executor ray or drop --ray-address")
    if args.executor is None:
        return
    os.environ[EXECUTOR_ENV] = args.executor
    if args.executor != "ray":
        return
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address
    if not os.environ.get("RAY_ADDRESS"):
        raise CliError("--executor ray serves shards from actors on a running Ray cluster, and plaidx serve does "
                       "not start one: start it (`ray start --head`) and pass --ray-address HOST:PORT or set "
                       "RAY_ADDRESS")
    from ..distributed.ray_backend import ensure_ray
    from ..errors import MissingExtraError

    try:
        ensure_ray(False)
    except MissingExtraError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    except Exception as exc:  # Ray's connection errors have no common base class
        raise CliError(f"--executor ray: cannot join the Ray cluster at {os.environ['RAY_ADDRESS']!r} "
                       f"({type(exc).__name__}: {exc}); check that it runs (`ray status`)", EXIT_FAILURE) from None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ============================================================================ parser
def _int_at_least(lowest: int, what: str, highest: Optional[int] = None):
    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value!r}") from None
        if v < lowest or (highest is not None and v > highest):
            raise argparse.ArgumentTypeError(f"expected a {what} integer{f' up to {highest}' if highest else ''}, "
                                             f"got {v}")
        return v
    return parse


def _finite(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return v


_positive = _int_at_least(1, "positive")
_non_negative = _int_at_least(0, "non-negative")
_knob = _int_at_least(1, "positive", MAX_KNOB)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search parameters (defaults chosen by k; see the README)")
    g.add_argument("--nprobe", type=_knob, help="cells probed per query token")
    g.add_argument("--centroid-score-threshold", type=_finite, help="prune centroids scoring below this")
    g.add_argument("--ndocs", type=_knob, help="candidates rescored by centroid interaction")
    g.add_argument("--n-exact", type=_knob, help="candidates decompressed for exact MaxSim")
    g.add_argument("--rerank", type=_int_at_least(0, "non-negative", MAX_KNOB),
                   help="on an index with kept vectors: candidates scored by them (0: off; default: the tier's)")
    g.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                   help="exhaustive MaxSim over every passage (--no-exact: always PLAID); default: exhaustive "
                        "for small indexes made by `plaidx index` when no parameter is given, else PLAID")
    p.add_argument("--model", help="model for the queries (default: the one the index records)")
    p.add_argument("--device", help="torch device for the model (default: cuda > mps > cpu)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="plaidx", formatter_class=fmt, epilog=_EPILOG,
                                     description="Compressed late-interaction (ColBERT/PLAID) indexes: build, "
                                                 "search, inspect, evaluate and serve them.")
    parser.add_argument("--version", action="version", version=f"plaidx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("index", help="build an index from a corpus", formatter_class=fmt, epilog=_EPILOG,
                       description="Encode a corpus with a ColBERT model and build a compressed index with its "
                                   "document store. SOURCE: a JSONL file (one {\"_id\", \"text\", [\"title\"], "
                                   "...} object per line; other fields become metadata), a BEIR folder "
                                   "(corpus.jsonl), a folder of .txt/.md/.rst files (ids are relative paths), "
                                   "or - for JSONL on stdin.")
    p.add_argument("source", help="corpus: JSONL file, BEIR folder, folder of text files, or -")
    p.add_argument("index", help="folder to create for the index")
    p.add_argument("--model", help="checkpoint name or path (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--nbits", type=int, choices=(1, 2, 4, 8),
                   help=f"bits per residual dimension (default {DEFAULT_NBITS}; more bits: a larger index, "
                        "slightly better ranking: see benchmarks/results/rag_defaults.md)")
    p.add_argument("--keep-vectors", choices=("int8", "float16"), default=None,
                   help="also keep every token's vector (the rerank tier: searches re-score their best candidates "
                        "with them; int8 is d + 4 bytes a token, about 4.7x a 2-bit index at d 128)")
    p.add_argument("--residual-codec", choices=("scalar", "pq"), default=None,
                   help="how residuals are coded (default: pq from 409,600 / nbits tokens at nbits 1-2, else scalar; "
                        "see docs/tuning.md)")
    p.add_argument("--max-document-length", type=_positive, default=None,
                   help="tokens per passage; longer documents are split (default 256; at most what the model "
                        "reads, clamped with a warning)")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="do not split long documents (they are truncated at the model's document length)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at INDEX")
    p.add_argument("--shards", type=_positive, default=1,
                   help="split the engine into N shards with one codec (plaidx.distributed; default 1)")
    p.add_argument("--limit", type=_positive, help="index only the first N documents")
    p.add_argument("--device", default=None,
                   help="cpu (default) or cuda / cuda:N: build on that GPU (k-means, assignment, compression), "
                        "passages encoded window by window while the previous window is compressed")
    p.add_argument("--index-metadata", action="append", metavar="FIELDS",
                   help="metadata fields to index for search --where (comma-separated, repeatable; 'a.b' for a "
                        "nested one): a filter on them reads only the matching documents")
    p.add_argument("--id-field", help="JSONL field holding the id (default: _id, id, doc_id or docid)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--title-field", default="title",
                   help="JSONL field prepended to the text as a title (default: title; '' for none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with query text", formatter_class=fmt, epilog=_EPILOG,
                       description="Encode queries with the index's model and print the ranked passages.")
    p.add_argument("index", help="index folder (made by `plaidx index`, or a bare engine folder)")
    p.add_argument("query", nargs="*", help="query text(s); '-' reads one query per line from stdin")
    p.add_argument("--queries-file", help="file with one query per line")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--doc-ids", action="append", metavar="IDS",
                   help="restrict results to these document ids (comma-separated, or a JSON list for ids with "
                        "commas; repeatable)")
    p.add_argument("--where", metavar="JSON",
                   help="restrict results to documents whose metadata matches this JSON filter, e.g. "
                        "'{\"year\": {\"$gte\": 2020}}' (operators: docs/rag.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--width", type=_positive, default=80,
                   help="characters of content shown per result (default 80)")
    _add_search_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="what an index holds; --verify checks it", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Print documents, passages, tokens, nlist, nbits, dim, model, size on disk and "
                                   "format version of an index (a folder made by `plaidx index` or a bare engine "
                                   "folder). --verify checks every checksum and the document store, shows "
                                   "drift, and exits 1 when it finds a problem.")
    p.add_argument("index", help="index folder")
    p.add_argument("--verify", action="store_true", help="check every CRC-32 and the document store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="nDCG@10, recall@100 and MRR@10 against qrels (ranx)", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Search every judged query of a BEIR folder (queries.jsonl + qrels/SPLIT.tsv) "
                                   "and score the run with ranx. A document's score is its best passage's.")
    p.add_argument("index", help="index folder built from the same corpus")
    p.add_argument("data", help="BEIR folder with queries.jsonl and qrels/")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("-k", type=_positive, default=100, help="passages retrieved per query (default 100)")
    p.add_argument("--limit-queries", type=_positive, help="evaluate only the first N judged queries")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_search_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve indexes over HTTP (FastAPI + uvicorn)", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Serve POST /v1/multi-vector and /v1/rerank (Jina API shapes), POST /v1/search, "
                                   "GET /v1/indexes and GET /health; OpenAPI at /docs. Listening beyond loopback "
                                   "requires an API key (--api-key or PLAIDX_API_KEY).")
    p.add_argument("--index", action="append", metavar="NAME=PATH",
                   help="an index to serve (repeatable; PATH alone names it after its folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $PLAIDX_API_KEY)")
    p.add_argument("--model", help="model for /v1/multi-vector and /v1/rerank (default: the first index's)")
    p.add_argument("--model-name", help="another name clients may send as 'model' (e.g. jina-colbert-v2)")
    p.add_argument("--max-body-bytes", type=_positive, default=4 << 20, help="request body limit (default 4 MiB)")
    p.add_argument("--max-inputs", type=_positive, default=256, help="texts per request (default 256)")
    p.add_argument("--max-tokens", type=_positive, default=131_072, help="model tokens per request")
    p.add_argument("--search-threads", type=_positive, help="searches at once (default: CPU count)")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the shards of sharded indexes are searched: in this process (local), or by Ray "
                        "actors that hold them memory-mapped (ray: joins a running cluster, see --ray-address). "
                        "Default: $PLAIDX_SHARDED_EXECUTOR, else local")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="the Ray cluster to join with --executor ray (default: $RAY_ADDRESS)")
    p.add_argument("--torch-threads", type=_positive, default=1,
                   help="threads of one model call (default 1: concurrent requests and shared model calls keep "
                        "the cores busy; more threads per call oversubscribe them under load)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("-q", "--quiet", action="store_true", help="no startup message")
    p.set_defaults(func=cmd_serve)

    from .interop import register as register_interop  # import / export: other engines and Qdrant

    register_interop(sub, fmt, _EPILOG)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except CliError as exc:
        print(f"plaidx {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"plaidx {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except IndexFormatError as exc:
        print(f"plaidx {args.command}: error: {exc} (run `plaidx info --verify` on it)", file=sys.stderr)
        return EXIT_FAILURE
    except CheckpointError as exc:  # --model names no usable model: wrong input
        print(f"plaidx {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (PlaidxError, OSError, ValueError, TypeError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"plaidx {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
