"""Reserved token ids shared by data sets, tokenizers, models and decoding.

Every text data set in bigjax pads with id 0 and every model masks id 0 as padding, so the
id is defined once here. BOS and EOS differ between vocabularies (a byte LM has none); a
tokenizer states its own (`bigjax.data.tokenizers`).
"""

import math

PAD_ID = 0


def padded_vocab(vocab_size: int, multiple: int) -> int:
  """The vocabulary rounded up to a multiple of `multiple` (XLA and GPUs like round sizes):
  the row count of a model's embedding and the column count of its logits."""
  return math.ceil(vocab_size / multiple) * multiple
