"""BERT-base fine-tuned on GLUE MRPC (are two sentences paraphrases?); reports accuracy and
F1 of the positive class, GLUE's two MRPC metrics.

Starts from a pre-trained BERT-base Hugging Face folder, as configs/bert_base_glue_sst2.py
(see there for the recipe and how to get the folder): --config.init_from=DIR.
Data: public TFDS `glue/mrpc`; `tfds build glue/mrpc --file_format=array_record`.
Command: python train.py --config configs/bert_base_glue_mrpc.py --config.init_from=DIR \
    --config.data.data_dir=DIR
Expected: validation F1 about 0.88 and accuracy about 0.84 (the paper's MRPC test F1 is 88.9);
not measured here.
"""

from configs import bert_base_glue_sst2, common


def get_config(arg=None):
  # 3,668 training pairs: 3 epochs at batch 32.
  return bert_base_glue_sst2.glue_finetune('glue/mrpc', steps=345, test=common.is_test(arg))
