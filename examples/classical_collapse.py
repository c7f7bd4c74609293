"""Posterior collapse in classical models under exact inference (PPCA, Gaussian mixtures).

    python examples/classical_collapse.py --output-dir runs/classical            # full run, a few minutes
    python examples/classical_collapse.py --output-dir /tmp/c --smoke-test       # seconds

Same as ``python -m pyro_lid classical``; see docs/classical.rst for the results.
"""

import sys

from pyro_lid.cli import main

if __name__ == "__main__":
    sys.exit(main(["classical", *sys.argv[1:]]))
