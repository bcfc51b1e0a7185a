import sys

from worker.cli import console

sys.exit(console())
