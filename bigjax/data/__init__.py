"""Data for the trainer: TFDS sources, per-record transforms, tokenizers, Grain pipelines.

datasets.py    the one table of data sets (name -> `DatasetSpec`)
spec.py        `DatasetSpec`
sets/          the data set definitions (how to open a split, which transforms, tokenizer)
builders/      the project's own TFDS builders and their offline preparation
sources.py     random-access sources: public TFDS splits, windows over a byte corpus
transforms/    per-record Grain transforms, by modality (image, text)
tokenizers.py  the Tokenizer protocol: bytes, the algorithmic vocabulary, BPE, WordPiece
run_tokenizer.py  a run's tokenizer: data.tokenizer, or learned once and saved in the workdir
pipeline.py    `Data`: sharded, shuffled, batched train and eval iterators
"""
