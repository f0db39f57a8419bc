"""BERT-base fine-tuned on GLUE SST-2 (binary sentiment of single sentences).

Starts from a pre-trained BERT-base in Hugging Face format: a folder with config.json,
model.safetensors and vocab.txt (or tokenizer.json), e.g. `bert-base-uncased` saved with
`save_pretrained` on a machine with network, or a bigjax run exported with
`bigjax.save_pretrained`. Pass it with --config.init_from=DIR (the tokenizer is read from the
same folder unless data.tokenizer says otherwise); the encoder is loaded, the MLM/NSP heads
dropped and the classifier initialised fresh.
Recipe (Devlin et al., 2019, section 4.1): 3 epochs at batch 32, AdamW lr 2e-5, weight decay
0.01, 10% linear warm-up then linear decay, dropout 0.1, sequences of 128.
Data: public TFDS `glue/sst2`; `tfds build glue/sst2 --file_format=array_record`.
Command: python train.py --config configs/bert_base_glue_sst2.py --config.init_from=DIR \
    --config.data.data_dir=DIR
Expected: validation accuracy about 0.93 (the paper's SST-2 test accuracy is 93.5); not
measured here.
"""

from configs import common

PRETRAINED = 'pretrained/bert-base-uncased'


def glue_finetune(dataset: str, *, steps: int, test: bool):
  """BERT-base on one GLUE task from a Hugging Face folder (the paper's fine-tuning recipe)."""
  c = common.base_config()
  c.task.name = 'text_classification'
  c.model.update(name='bert_base', head='classification', num_classes=2, dropout_rate=0.1)
  # The init_from folder's vocabulary size (config.json's vocab_size): 30,522 for the uncased
  # BERT-base; set it for another folder (e.g. 28,996 for bert-base-cased).
  c.model.vocab_size = 30522
  c.init_from = PRETRAINED
  c.data.update(name=dataset, max_len=128, tokenizer='')  # '' -> the init_from folder's vocab
  c.optim.update(name='adamw', lr=2e-5, weight_decay=0.01, eps=1e-6, clip_norm=1.0)
  c.schedule.update(name='linear', warmup_steps=steps // 10)
  c.train.update(steps=steps, batch_size=32, eval_batch_size=256)
  c.train.update(log_every=100, eval_every=steps // 3, checkpoint_every=steps // 3)
  if test:
    common.shrink_for_test(c)
    c.model.update(name='bert_test', vocab_size=128)
    c.data.max_len = 32
  return c


def get_config(arg=None):
  # 67,349 training sentences: 3 epochs at batch 32.
  return glue_finetune('glue/sst2', steps=6315, test=common.is_test(arg))
