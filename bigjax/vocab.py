"""Reserved token ids shared by data sets, tokenizers, models and decoding.

Every text data set in bigjax pads with id 0 and every model masks id 0 as padding, so the
id is defined once here. BOS and EOS differ between vocabularies (a byte LM has none); a
tokenizer states its own (`bigjax.data.tokenizers`).
"""

PAD_ID = 0
