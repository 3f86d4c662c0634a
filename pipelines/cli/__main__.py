"""`python -m pipelines.cli`: how `supportflow run` and the tests start child processes."""

import sys

from pipelines.cli.main import entrypoint

sys.exit(entrypoint())
