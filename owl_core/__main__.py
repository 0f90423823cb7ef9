"""``python -m owl_core ...``: see `owl_core.cli.main`."""

from owl_core.cli.main import main

raise SystemExit(main())
