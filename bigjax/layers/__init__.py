"""Blocks shared by the model families: attention, MLP, positions, Transformer blocks."""

from bigjax.layers.attention import MultiHeadAttention, causal_mask, padding_mask
from bigjax.layers.mlp import MlpBlock
from bigjax.layers.positional import LearnedPositions, sinusoidal_positions
from bigjax.layers.transformer import DecoderBlock, EncoderBlock

__all__ = [
  'DecoderBlock',
  'EncoderBlock',
  'LearnedPositions',
  'MlpBlock',
  'MultiHeadAttention',
  'causal_mask',
  'padding_mask',
  'sinusoidal_positions',
]
