"""`python -m plaidx`: the same command line as the `plaidx` console script."""

from .cli import main

raise SystemExit(main())
