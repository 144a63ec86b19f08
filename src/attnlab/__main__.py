"""`python -m attnlab --version`."""

import argparse

from attnlab import __version__

parser = argparse.ArgumentParser(prog="attnlab", description=__doc__)
parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
parser.parse_args()
parser.print_help()
