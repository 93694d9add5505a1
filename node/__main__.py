"""`python -m dhtscope.node ARGS` runs one node, as `dhtscope node ARGS` does."""

import sys

from .cli import main_node

sys.exit(main_node())
