"""``python -m owl_core ...``: see `owl_core.cli`."""

from owl_core.cli import main

raise SystemExit(main())
