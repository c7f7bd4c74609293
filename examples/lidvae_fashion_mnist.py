"""VAE, beta-VAE, GMVAE, LIDGMVAE and LIDVAE side by side on binarized Fashion-MNIST.

    apt-get install dataset-fashion-mnist      # once: the data, offline
    python examples/lidvae_fashion_mnist.py --num-train 20000 --epochs 10 --output-dir runs/fmnist
    python examples/lidvae_fashion_mnist.py --smoke-test --dataset synthetic      # seconds, no data needed

Prints the AU / KL / MI / LL table (see docs/results.md). Same as ``python -m pyro_lid compare``.
"""

import sys

from pyro_lid.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
