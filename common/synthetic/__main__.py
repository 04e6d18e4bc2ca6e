"""``python -m common.synthetic DATASET --out DIR``: see :mod:`common.synthetic`."""
import sys

from common.synthetic import main

main(sys.argv[1:])
