"""BERT-tiny (2 layers, width 128, 2 heads; Turc et al., 2019) trained on GLUE SST-2 by
task-specific distillation from a BERT-base fine-tuned on SST-2: the setting of DistilBERT's
and TinyBERT's task stage and of Turc et al.'s "Pre-trained Distillation".

Teacher: `distill.teacher`, by default 'runs/bert_base_glue_sst2' (the workdir of
`python train.py --config configs/bert_base_glue_sst2.py --config.init_from=BERT_BASE`; its
latest checkpoint), or one of its `checkpoints/<step>` folders, or a Hugging Face folder of a
BertForSequenceClassification fine-tuned on SST-2 (config.json + model.safetensors). It is
frozen and runs in each step on the student's batch.

Vocabulary: the student reads the teacher's token ids (uncased BERT WordPiece, 30,522).
`data.tokenizer` names it: by default the folder the default teacher was fine-tuned from,
bert_base_glue_sst2.PRETRAINED (its vocab.txt; the teacher workdir's config.json records the
same path under data.tokenizer). With a Hugging Face teacher, point it at that folder:
--config.data.tokenizer=TEACHER_DIR. Google's BERT miniatures (bert_uncased_L-2_H-128_A-2)
ship the same uncased vocab.txt, so the pre-trained student folder serves as well.

Student initialisation: from scratch by default. Turc et al. show pre-training the compact
student first ("well-read students learn better") compounds with distillation: start from
a pre-trained BERT-tiny in Hugging Face format (google/bert_uncased_L-2_H-128_A-2 saved with
`save_pretrained`) with --config.init_from=DIR; its encoder is loaded, the classifier starts
fresh.

Recipe: the prediction-layer objective of TinyBERT (Jiao et al., 2020) and Turc et al.:
the student's cross-entropy against the teacher's soft predictions at temperature 1, with no
hard-label term (alpha = 1; KL at T = 1 has the same gradients as that soft cross-entropy).
Optimiser from Turc et al.'s fine-tuning grid for the miniatures (4 epochs, batch 32, Adam
lr in {3e-4, 1e-4, 5e-5, 3e-5}; 1e-4 here), AdamW with weight decay 0.01, 10% linear warm-up
then linear decay, dropout 0.1, sequences of 128 (bert_base_glue_sst2's `glue_finetune`).
Attention distillation (TinyBERT's attention loss): --config.distill.attention_weight=1.0;
with `distill.attention_layers` empty the student's 2 layers learn the teacher's layers 6
and 12 (TinyBERT's uniform mapping). TinyBERT also distils embeddings and hidden states and
augments the data; neither is done here.

Data: public TFDS `glue/sst2` (`tfds build glue/sst2 --file_format=array_record`).
Command: python train.py --config configs/distill_bert_base_to_tiny_glue_sst2.py \
    --config.data.data_dir=DIR [--config.distill.teacher=runs/bert_base_glue_sst2] \
    [--config.init_from=BERT_TINY_DIR]
Expected: not measured here. Published: BERT-tiny pre-trained then fine-tuned alone scores
83.2 on the SST-2 test set (the GLUE table of the BERT miniatures, google-research/bert);
Turc et al. find distillation adds to pre-training (Pre-trained Distillation beats either
alone); the teacher (BERT-base) about 93.
Time: minutes per epoch on one GPU (the BERT-base forward pass dominates); hours on CPU.
"""

from configs import bert_base_glue_sst2, common

TEACHER = 'runs/bert_base_glue_sst2'
STEPS = 8420  # 67,349 training sentences: 4 epochs at batch 32


def get_config(arg=None):
  test = common.is_test(arg)
  # SST-2 data, task, optimiser and schedule of the teacher's fine-tuning; `test` shrinks it
  # to bert_test, sequences of 32 and 6 steps.
  c = bert_base_glue_sst2.glue_finetune('glue/sst2', steps=STEPS, test=test)
  if not test:
    c.model.name = 'bert_tiny'  # vocab_size 30,522 as the teacher
  c.init_from = ''  # optional pre-trained BERT-tiny (see above)
  c.data.tokenizer = bert_base_glue_sst2.PRETRAINED  # the teacher's vocabulary
  c.optim.lr = 1e-4
  c.distill.update(teacher=TEACHER, loss='kl', alpha=1.0, temperature=1.0)
  c.distill.update(attention_weight=0.0, attention_layers='')  # off; see above
  return c
