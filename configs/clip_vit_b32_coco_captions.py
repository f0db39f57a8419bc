"""CLIP ViT-B/32 (Radford et al., 2021) trained from scratch on COCO captions (public TFDS
`coco_captions`, COCO 2014 with the Karpathy & Li splits; prepare it first on a machine
with network: `tfds build coco_captions --data_dir=DIR --file_format=array_record`).

Each step pairs every image with one of its captions, drawn at random (the first at
evaluation); images are resized and randomly cropped to 224 x 224 (centrally at evaluation)
and normalised with CLIP's pixel statistics. Texts are a byte-level BPE learned from the
training captions (saved in the workdir), [BOS] caption [EOS] in 77 tokens; the text tower
pools at the EOS. Loss: CLIP's symmetric contrastive loss over the global batch (every
device's pairs are negatives of every other's), the temperature learned from 0.07 and
clipped at 100. Recipe after the paper's Table 19 (AdamW, beta2 0.98, eps 1e-6, weight
decay 0.2, cosine), scaled to COCO's 82,783 training images: batch 1024 for 5,000 steps
(62 epochs), peak lr 5e-4 after 500 warmup steps, bfloat16 compute.
Evaluation on the 5,000 'val' images: image -> text and text -> image recall@1/5/10 and
the in-batch accuracies.

Fine-tuning OpenAI's weights instead: a local Hugging Face folder of
openai/clip-vit-base-patch32 (config.json, model.safetensors, tokenizer.json) loads with
`--config.init_from=HF_DIR --config.data.tokenizer=HF_DIR --config.model.eos_token_id=49407`
(CLIP's own BPE, whose EOS is 49407).

Command: python train.py --config configs/clip_vit_b32_coco_captions.py --config.data.data_dir=DIR
Expected: not measured (no COCO here). From scratch on 83k images this is far below CLIP's
published retrieval (which comes from 400M pairs); recall@1 in the low tens of percent on
the 5k val images is a plausible range, not a claim.
Time: a few hours on one modern GPU; far too slow for CPU.
"""

from configs import common


def get_config(arg=None):
  c = common.base_config()
  # The learned BPE ends texts with '</s>' = 1 (bigjax.data.sets.captions).
  c.model.update(name='clip_vit_b32', text_pool='eos', eos_token_id=1)
  c.data.update(name='coco_captions', image_size=224, max_len=77, vocab_size=49408)
  c.data.update(tokenizer='', tokenizer_sample=20_000)
  c.task.update(name='contrastive')
  c.optim.update(name='adamw', lr=5e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2)
  c.schedule.update(name='cosine', warmup_steps=500)
  c.train.update(steps=5000, batch_size=1024, eval_batch_size=1000, compute_dtype='bfloat16')
  c.train.update(log_every=100, eval_every=1000, checkpoint_every=1000)
  if common.is_test(arg):
    common.shrink_for_test(c)
    # clip_test with one layer per tower (width 32, 4x4 patches); a BPE of 300 ids learned
    # from the mock captions; one checkpoint, at the end
    c.model.update(name='clip_test', vision_layers=1, text_layers=1, vocab_size=300)
    c.model.update(text_pool='eos', eos_token_id=1)
    c.train.checkpoint_every = 6
    c.data.update(image_size=16, max_len=16, vocab_size=300, tokenizer_sample=64)
    c.train.compute_dtype = 'float32'
  return c
