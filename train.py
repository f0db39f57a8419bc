"""Train any bigjax model: python train.py --config configs/X.py[:arg] --workdir DIR.

With no --config it trains the embedded default (an MLP on the offline `digits` data).
"""

import os
import sys

from bigjax.train.cli import main

DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'configs', 'mlp_digits.py'
)

if __name__ == '__main__':
  sys.exit(main(default_config=DEFAULT_CONFIG))
