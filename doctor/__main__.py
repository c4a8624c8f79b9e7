import sys

from doctor import cli

sys.exit(cli())
