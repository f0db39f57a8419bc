"""ResNet-18 on ImageNet-1k distilled from a trained ResNet-50 (the teacher of
configs/resnet50_imagenet2012.py), by function matching (Beyer et al., 2022, "Knowledge
distillation: A good teacher is patient and consistent").

Teacher: `distill.teacher`, by default 'runs/resnet50_imagenet2012' (the workdir that
`python train.py --config configs/resnet50_imagenet2012.py` writes; its latest checkpoint),
or one of its `checkpoints/<step>` folders, or a Hugging Face ResNet-50 folder
(config.json + model.safetensors, e.g. microsoft/resnet-50 saved on a machine with network).
It is frozen and runs in the same step as the student, on the same batch.

Recipe. Beyer et al. find two things matter: consistency (teacher and student see the very
same augmented view, so no precomputed teacher outputs: the trainer gives both the same
crop, flip and mix, and `distill.precompute` stays off) and patience (function matching
keeps improving over far longer schedules than supervised training; they report no
saturation after thousands of epochs). So: the student matches the teacher's function alone,
KL(teacher || student) at temperature 1 with no label term (alpha = 1, as in their function
matching; the labels only score the evaluation); mixup on top of the inception crops makes
more views of the input space for the teacher to label (alpha 0.2, our choice; with no label
term a mixed image needs no mixed label); 200 epochs rather than the teacher's 90 (a budget
choice: longer should help, --config.train.steps). The optimiser is the teacher's tested
ResNet recipe (SGD momentum 0.9, lr 0.1 x batch / 256, 5 warm-up epochs then cosine, weight
decay 1e-4 on kernels, batch 1024, bfloat16) rather than the paper's, so nothing here is a
reproduction of their numbers. For the classic setting instead (Hinton et al., 2015: labels
and soft targets): --config.distill.alpha=0.5 --config.distill.temperature=4.
A FitNets hint (Romero et al., 2015) on the pooled features (512 -> 2048 through a learned
projection) is wired but off: --config.distill.hint_weight=1.0 turns it on.

Data: public TFDS `imagenet2012` (see configs/resnet50_imagenet2012.py for the build).
Command: python train.py --config configs/distill_resnet50_to_resnet18_imagenet2012.py \
    --config.data.data_dir=DIR [--config.distill.teacher=runs/resnet50_imagenet2012]
Expected: not measured here. Published points of reference: a ResNet-18 trained alone reaches
about 0.698 top-1 (torchvision, 90 epochs); Beyer et al. take a ResNet-50 student to 0.828
top-1 from a BiT ResNet-152x2 teacher with thousands of epochs. Expect the ResNet-18 student
between its supervised accuracy and its teacher's.
Time: each step runs a ResNet-50 forward pass besides the ResNet-18 one, so an epoch costs
about as much as one of the teacher's own training: 200 epochs is several days on one
modern GPU (with --config.data.workers=16).
"""

from configs import common, resnet50_imagenet2012

TEACHER = 'runs/resnet50_imagenet2012'
EPOCHS = 200


def get_config(arg=None):
  test = common.is_test(arg)
  # The teacher's data, augmentation, optimiser and intervals; the student and the length
  # change. `test` shrinks it as the teacher's `test` (6 steps, 32-pixel images).
  c = resnet50_imagenet2012.get_config(arg)
  epoch = resnet50_imagenet2012.EPOCH
  c.model.name = 'resnet18'  # basic blocks, 512 pooled features (zero-init residual kept)
  c.data.mixup_alpha = 0.2
  c.train.label_smoothing = 0.0  # no label term (alpha = 1); evaluation reads plain labels
  c.train.update(steps=EPOCHS * epoch, eval_every=10 * epoch)
  c.distill.update(teacher=TEACHER, loss='kl', alpha=1.0, temperature=1.0)
  # Off until hint_weight > 0: the student's 512 pooled features learn the teacher's 2048.
  c.distill.update(hints='features:features', hint_weight=0.0)
  if test:
    common.shrink_for_test(c)
    # The teacher's test model is resnet_test with bottleneck blocks; the student has basic
    # blocks, as ResNet-18 against ResNet-50. The test gives the teacher's path.
    c.model.update(name='resnet_test', block='basic', cifar_stem=False)
  return c
