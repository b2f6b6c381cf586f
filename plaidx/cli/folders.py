"""How the CLI opens index folders and their models; the folder itself is :class:`plaidx.rag.IndexFolder`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Optional, Union

from ..engine import SearchParams
from ..errors import IndexFormatError
from ..rag import IndexFolder
from .errors import EXIT_USAGE, CliError


def open_folder(path: Union[str, os.PathLike], verify: str = "structure", reconcile: bool = True) -> IndexFolder:
    """The index folder at ``path``; a missing path or a folder of another kind is a usage error."""
    from ..rag.folder import locate

    try:
        locate(path)
    except (FileNotFoundError, IndexFormatError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return IndexFolder(path, verify=verify, reconcile=reconcile)


def search_params(args: argparse.Namespace) -> dict[str, Any]:
    """``params`` and ``exact`` of a search from the command line's options; PLAID options with ``--exact``
    (which scores every passage and uses none of them) are a usage error."""
    params = SearchParams(args.nprobe, args.centroid_score_threshold, args.ndocs, args.n_exact,
                          getattr(args, "rerank", None))
    if args.exact and not dataclasses.replace(params, rerank=None).is_default():
        given = [f"--{f.replace('_', '-')}" for f in ("nprobe", "centroid_score_threshold", "ndocs", "n_exact")
                 if getattr(args, f) is not None]
        raise CliError(f"--exact scores every passage and ignores PLAID's {', '.join(given)}: drop --exact, or "
                       f"drop {' and '.join(given)}", EXIT_USAGE)
    return {"params": params, "exact": args.exact}


def load_model(name: Optional[str], folder: Optional[IndexFolder] = None, device: Optional[str] = None) -> Any:
    """The model to encode queries for ``folder``: ``name`` if given, else the one the index records."""
    from ..encoder import ColBERT

    if name is not None:
        return ColBERT.from_pretrained(name, device=device)
    if folder is not None and folder.model_config is not None:
        cfg = folder.model_config
        if "dim" in cfg or "query_length" in cfg:
            return ColBERT.from_config_dict(cfg, device=device)
        return ColBERT.from_pretrained(cfg["name_or_path"], device=device)
    if folder is not None:
        raise CliError(f"{str(folder.path)!r} records no model; pass --model NAME_OR_PATH (the model that made "
                       "its embeddings)")
    return ColBERT.from_pretrained(None, device=device)
