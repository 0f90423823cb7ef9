import sys

from owl_core.rest.server import serve_main

sys.exit(serve_main())
