"""Transformer base on WMT'14 English->German ("Attention Is All You Need", section 5).

Recipe from the paper: post-LN base model (D=512, 8 heads, d_ff 2048, 6+6 layers, dropout
0.1) with shared source/target embeddings tied to the output; a shared BPE vocabulary (here
32000 byte-level BPE tokens, learned on 200k training pairs on first use and saved as
`tokenizer.json` in the workdir); Adam (b1 0.9, b2 0.98, eps 1e-9) with the inverse square
root schedule, 4000 warm-up steps and peak lr D^-0.5 * 4000^-0.5 (= 7.0e-4, the paper's
formula at its peak); label smoothing 0.1; 100k steps. The paper batches ~25k source and
25k target tokens; here batches are 768 sentence pairs padded to 128 tokens (about 23k real
tokens per side). No checkpoint averaging and no BLEU in the trainer: translate with
`python -m bigjax.generate --workdir DIR --method beam --beam_size 4 --alpha 0.6 --prompt ...`.

Data: public TFDS `wmt14_translate/de-en`; prepare it first on a machine with network:
`tfds build wmt14_translate/de-en --data_dir=DIR --file_format=array_record`.
Command: python train.py --config configs/transformer_wmt14_ende.py --workdir runs/wmt \
    --config.data.data_dir=DIR
Expected: validation (newstest2013) loss about 1.6 nats per subword (the paper's dev
perplexity is 4.92 with its 37k wordpieces, Table 3), which corresponds to ~27 BLEU on
newstest2014 after beam search (paper: 27.3). An estimate from the paper, not a measured
run. Time: the paper took 12 h on 8 P100s; expect roughly a day on one modern GPU (bfloat16);
far too slow for CPU.
"""

from configs import common

VOCAB = 32000


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='transformer_base', vocab_size=VOCAB, dropout_rate=0.1)
  c.data.update(name='wmt14_translate/de-en', source_lang='en', target_lang='de', max_len=128)
  c.data.vocab_size = VOCAB  # the BPE size; must equal model.vocab_size
  c.data.update(tokenizer_sample=200_000, tokenizer='')  # '' -> <workdir>/tokenizer.json
  c.optim.update(name='adam', b1=0.9, b2=0.98, eps=1e-9)
  c.optim.lr = 512**-0.5 * 4000**-0.5  # lrate = d^-0.5 min(s^-0.5, s w^-1.5) peaks here
  c.schedule.update(name='rsqrt', warmup_steps=4000)
  c.train.update(steps=100_000, batch_size=768, eval_batch_size=500, label_smoothing=0.1)
  c.train.update(log_every=200, eval_every=5000, checkpoint_every=5000)
  c.train.compute_dtype = 'bfloat16'
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.name = 'transformer_test'
    c.model.vocab_size = c.data.vocab_size = 300  # 256 bytes + 3 specials + a few merges
    c.data.update(max_len=16, tokenizer_sample=64)
    c.train.compute_dtype = 'float32'
  return c
