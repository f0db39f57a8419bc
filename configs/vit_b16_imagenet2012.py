"""ViT-B/16 (Dosovitskiy et al., 2021) trained from scratch on ImageNet-1k (public TFDS
`imagenet2012`, which needs the ILSVRC2012 tars in DIR/downloads/manual/ and `tfds build
imagenet2012 --data_dir=DIR --file_format=array_record`).

Recipe: the paper's ImageNet-from-scratch setting (Table 3: batch 4096, lr 3e-3, 10k warmup
steps, global-norm clipping at 1, 300 epochs; here AdamW with decoupled weight decay 0.1 and
a cosine decay) with the DeiT regularisers that bigjax has (Touvron et al., 2021: label
smoothing 0.1, mixup 0.8, cutmix 1.0), random-resized crops + flips at 224, resize +
centre crop at evaluation. The lr scales linearly with the batch: 3e-3 x batch / 4096.

Command: python train.py --config configs/vit_b16_imagenet2012.py --config.data.data_dir=DIR
Expected: top-1 validation accuracy about 0.78-0.80. This is an estimate, not a measured
run: the ViT paper reports ViT-B/16 trained on ImageNet-1k alone at 77.9% (after 384 px
fine-tuning), and DeiT-B reaches 81.8% with further regularisers that bigjax does not have
(RandAugment, stochastic depth, repeated augmentation, random erasing).
Time: about a day on 8 H100-class GPUs in bfloat16 if the input pipeline keeps up (DeiT-B
took 3 days on 8 V100s); JPEG decoding at that rate needs many CPU cores
(--config.data.workers=32 or more per host). On fewer devices keep train.batch_size=4096
(the examples of one optimiser update) and raise optim.grad_accum_steps to k: each step then
runs k micro-batches of 4096 / k and makes one update, so the schedule, the 300 epochs and
every step interval stay as they are.

Weight decay: kernels only (the default `optim.decay_pattern`), as the recipes cited: the
ViT code (big_vision, `.*/kernel$`) and DeiT (timm: no decay on biases, norms, `pos_embed`,
`cls_token`); the class token, position embeddings, biases and LayerNorm are not decayed.
"""

from configs import common

BATCH = 4096
EPOCH = 1_281_167 // BATCH  # 312 steps per epoch


def get_config(arg=None):
  c = common.base_config()
  c.model.update(name='vit_b16', num_classes=1000, pool='cls')
  c.model.dropout_rate = 0.0  # DeiT: no dropout once mixup / cutmix regularise
  c.data.update(common.imagenet_data(224, mixup_alpha=0.8, cutmix_alpha=1.0))
  c.optim.update(name='adamw', lr=3e-3 * BATCH / 4096, b1=0.9, b2=0.999)
  c.optim.update(weight_decay=0.1, clip_norm=1.0)
  c.schedule.update(name='cosine', warmup_steps=10_000)
  c.train.update(steps=300 * EPOCH, batch_size=BATCH, eval_batch_size=1000, label_smoothing=0.1)
  c.train.update(log_every=100, eval_every=5 * EPOCH, checkpoint_every=EPOCH)
  c.train.compute_dtype = 'bfloat16'
  if common.is_test(arg):
    common.shrink_for_test(c)
    c.model.name = 'vit_test'  # 2 layers of width 32, 4x4 patches
    c.data.image_size = 32
    c.optim.lr = 3e-3 * c.train.batch_size / 4096
    c.optim.grad_accum_steps = 2  # exercise accumulation end to end: 2 micro-batches of 8
    c.train.compute_dtype = 'float32'  # bf16 is covered by tests/models/test_vit.py
  return c
