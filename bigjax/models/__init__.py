"""Importing this package registers every model family."""

from bigjax.models import (  # noqa: F401
  inception,
  lenet,
  mlp,
  resnet,
  rnn,
  seq2seq,
  transformer,
  vgg,
  vit,
)
