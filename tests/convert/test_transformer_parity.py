"""The encoder-decoder stacks against torch.nn.Transformer with the same weights (fp32), the
weights copied by `bigjax.convert.torch_transformer`."""

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='parity tests need torch (the parity extra)')

import jax.numpy as jnp  # noqa: E402

from bigjax.convert.torch_transformer import transformer_from_torch  # noqa: E402
from bigjax.models.transformer import Transformer  # noqa: E402

pytestmark = pytest.mark.parity

B, S, T, D, H, F, N = 3, 7, 6, 32, 4, 64, 2


@pytest.mark.filterwarnings('ignore:The PyTorch API of nested tensors')
@pytest.mark.parametrize('activation', ['relu', 'gelu'])
def test_matches_torch_transformer(activation):
  torch.manual_seed(0)
  ref = torch.nn.Transformer(
    d_model=D,
    nhead=H,
    num_encoder_layers=N,
    num_decoder_layers=N,
    dim_feedforward=F,
    dropout=0.0,
    activation=activation,  # torch's 'gelu' is the exact erf form
    batch_first=True,
  ).eval()
  # torch initialises LayerNorm to (1, 0); random affine parameters make the copy count.
  with torch.no_grad():
    for name, p in ref.named_parameters():
      if 'norm' in name:
        p.add_(0.3 * torch.randn_like(p))
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}

  rng = np.random.default_rng(0)
  src = rng.normal(size=(B, S, D)).astype(np.float32)
  tgt = rng.normal(size=(B, T, D)).astype(np.float32)
  src_valid = np.arange(S)[None] < np.array([[S], [4], [2]])  # [B, S]
  tgt_valid = np.arange(T)[None] < np.array([[T], [T], [3]])  # [B, T]
  with torch.no_grad():
    want = ref(
      torch.from_numpy(src),
      torch.from_numpy(tgt),
      tgt_mask=torch.triu(torch.ones(T, T, dtype=torch.bool), 1),
      tgt_is_causal=True,
      src_key_padding_mask=torch.from_numpy(~src_valid),
      tgt_key_padding_mask=torch.from_numpy(~tgt_valid),
      memory_key_padding_mask=torch.from_numpy(~src_valid),
    ).numpy()
    memory = ref.encoder(
      torch.from_numpy(src), src_key_padding_mask=torch.from_numpy(~src_valid)
    ).numpy()

  model = Transformer(
    vocab_size=16,
    hidden_size=D,
    num_heads=H,
    mlp_dim=F,
    num_encoder_layers=N,
    num_decoder_layers=N,
    dropout_rate=0.0,
    pre_norm=False,
    final_norm=True,
    layer_norm_eps=1e-5,
    activation=activation,
  )
  params = transformer_from_torch(sd, H)['params']  # the converter under test

  def stacks(module, src, src_valid, tgt, tgt_valid):
    encoded = module.encoder(src, src_valid)
    return encoded, module.decoder(tgt, encoded, src_valid, tgt_valid)

  encoded, got = model.apply(
    {'params': params},
    jnp.asarray(src),
    jnp.asarray(src_valid),
    jnp.asarray(tgt),
    jnp.asarray(tgt_valid),
    method=stacks,
  )
  # torch zeroes padded encoder positions (nested tensors); only valid ones are compared.
  np.testing.assert_allclose(np.asarray(encoded)[src_valid], memory[src_valid], atol=1e-4)
  diff = np.abs(np.asarray(got) - want).max()
  print(f'max |bigjax - torch| decoder output: {diff:.2e}')
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
