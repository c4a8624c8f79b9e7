import sys

from resync import cli

sys.exit(cli())
