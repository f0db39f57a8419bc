"""Former home of the `algorithmic_reversed` data set, kept so old imports work: the
data set is defined in `bigjax.data.sets.algorithmic`, its formatting in
`bigjax.data.transforms.text` and `bigjax.data.tokenizers`."""

from bigjax.data.tokenizers import pad_operands  # noqa: F401  (re-exported)
from bigjax.data.transforms.text import ReverseTarget as Reformat  # noqa: F401
