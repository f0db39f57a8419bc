"""Type aliases used across bigjax, defined once."""

from typing import Any

import jax

PyTree = Any
PRNGKey = jax.Array
Batch = dict[str, Any]
Dtype = Any
# A config section: an ml_collections.ConfigDict, or anything read through attribute access
# and `.get(key, default)` (bigjax.train.plain_config.PlainConfig).
Config = Any
