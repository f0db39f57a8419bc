"""Blocks shared by the model families: a kit of parts (see each module's docstring)."""

from bigjax.layers.activations import ACTIVATIONS, activation
from bigjax.layers.attention import MultiHeadAttention, causal_mask, padding_mask
from bigjax.layers.blocks import BlockConfig, DecoderBlock, EncoderBlock
from bigjax.layers.heads import OutputKernel
from bigjax.layers.mlp import MlpBlock
from bigjax.layers.moe import MoeBlock
from bigjax.layers.norms import NORMS, make_norm
from bigjax.layers.partitioning import logical_axes
from bigjax.layers.positional import LearnedPositions, rotary, sinusoidal_positions
from bigjax.layers.stack import stack_blocks, stack_layers, unstack_layers

__all__ = [
  'ACTIVATIONS',
  'NORMS',
  'BlockConfig',
  'DecoderBlock',
  'EncoderBlock',
  'LearnedPositions',
  'MlpBlock',
  'MoeBlock',
  'MultiHeadAttention',
  'OutputKernel',
  'activation',
  'causal_mask',
  'logical_axes',
  'make_norm',
  'padding_mask',
  'rotary',
  'sinusoidal_positions',
  'stack_blocks',
  'stack_layers',
  'unstack_layers',
]
