"""Type aliases used across bigjax, defined once."""

from typing import Any

import jax

PyTree = Any
PRNGKey = jax.Array
Batch = dict[str, Any]
Dtype = Any
