"""BERT-base pre-trained with masked LM + next-sentence prediction on English Wikipedia.

Recipe (Devlin et al., 2019, section A.2), the phase-1 setting: sequences of 128 tokens,
batch 256, AdamW lr 1e-4 with b2 0.999, weight decay 0.01, 10,000 warm-up steps then
linear decay, dropout 0.1, GELU, 1M steps (the paper ran 90% of its steps at 128 tokens
and the rest at 512; run the second phase with `--config.data.max_len=512
--config.init_from=<phase-1 workdir>`). Masking is dynamic (RoBERTa's choice): redrawn
every epoch. Uncased WordPiece of 30,522: either the official `vocab.txt` (pass
`--config.data.tokenizer=/path/to/bert-base-uncased`), or, with `data.tokenizer` empty, one
learned from the training split on first use and saved in the workdir.
Data: public TFDS `wikipedia/20230601.en` (BooksCorpus is not in TFDS); prepare it first on
a machine with network: `tfds build wikipedia/20230601.en --file_format=array_record`.
Command: python train.py --config configs/bert_base_wikipedia_mlm.py \
    --config.data.data_dir=DIR
Expected: masked-LM accuracy about 0.7 at the end (an estimate from published BERT-base
runs, not measured here). Time: several days on one modern GPU; not for CPU.
"""

from configs import common

VOCAB = 30522


def get_config(arg=None):
  test = common.is_test(arg)
  c = common.base_config()
  c.task.name = 'mlm'
  c.model.update(name='bert_base', head='pretraining', vocab_size=VOCAB, dropout_rate=0.1)
  c.data.update(name='wikipedia', max_len=128, vocab_size=VOCAB, tokenizer='')
  c.data.max_predictions = 20  # MLM logits at the 15% selected positions only, as BERT
  c.data.tokenizer_sample = 200_000  # articles read to learn the WordPiece vocabulary
  c.optim.update(name='adamw', lr=1e-4, weight_decay=0.01, b2=0.999, eps=1e-6, clip_norm=1.0)
  c.schedule.update(name='linear', warmup_steps=10_000)
  c.train.update(steps=1_000_000, batch_size=256, eval_batch_size=256, eval_steps=100)
  c.train.update(log_every=500, eval_every=20_000, checkpoint_every=10_000)
  c.train.compute_dtype = 'bfloat16'
  if test:
    common.shrink_for_test(c)
    c.model.update(name='bert_test', vocab_size=200)
    c.data.update(max_len=32, max_predictions=5, vocab_size=200, tokenizer_sample=32)
    c.train.compute_dtype = 'float32'
  return c
