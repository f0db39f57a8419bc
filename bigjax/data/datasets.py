"""The one table of data sets: name -> `DatasetSpec` (`bigjax.data.spec`).

Every data set bigjax knows is listed here and nowhere else; a definition module in
`bigjax.data.sets` only builds specs and never registers itself. Adding a data set is one
row.
"""

import difflib

from bigjax.data.sets import algorithmic, glue, images, lm1b, pystdlib, speech, wikipedia, wmt
from bigjax.data.spec import DatasetSpec

DATASETS: dict[str, DatasetSpec] = {
  # The project's own builders, prepared offline on first use.
  'algorithmic': algorithmic.ALGORITHMIC,
  'algorithmic_reversed': algorithmic.ALGORITHMIC_REVERSED,
  'digits': images.DIGITS,
  'pystdlib': pystdlib.PYSTDLIB,
  'pystdlib_mlm': pystdlib.PYSTDLIB_MLM,
  'pystdlib_syntax': pystdlib.PYSTDLIB_SYNTAX,
  'spoken_words': speech.SPOKEN_WORDS,
  # Public TFDS data sets, prepared beforehand with `tfds build`.
  'mnist': images.public('mnist'),
  'fashion_mnist': images.public('fashion_mnist'),
  'cifar10': images.public('cifar10'),
  'cifar100': images.public('cifar100'),
  'imagenet2012': images.IMAGENET2012,
  'wmt14_translate/de-en': wmt.WMT14_DE_EN,
  'wikipedia': wikipedia.WIKIPEDIA,  # data.tfds_name picks the dump
  'lm1b': lm1b.LM1B,
  'speech_commands': speech.SPEECH_COMMANDS,
  **{f'glue/{task}': glue.glue(task) for task in glue.TASKS},
}


def list_datasets() -> list[str]:
  return sorted(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    close = difflib.get_close_matches(name, DATASETS, n=3, cutoff=0.5)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise ValueError(
      f'unknown dataset {name!r}: {hint}known datasets: {", ".join(sorted(DATASETS))}'
    )
  return DATASETS[name]
