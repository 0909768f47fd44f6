"""Contrastive losses: InfoNCE / NT-Xent, CoSENT and AnglE (graded scores), the Matryoshka wrapper,
embedding distillation towards a fixed teacher, false-negative masks (by text, by group, by a guide model),
cross-device gathering, GradCache, MoCo.

A trainer step, in its variants (``enc`` maps a tokenized batch to ``(B, d)``)::

    loss_fn = InfoNCE(temperature=0.05, gather_across_devices=accelerator.num_processes > 1)
    keys = text_keys(batch_texts)                       # optional: duplicates are not negatives

    # plain (unsupervised SimCSE: the same batch twice, two dropout masks)
    loss = loss_fn(enc(batch), enc(batch), anchor_keys=keys, positive_keys=keys)
    accelerator.backward(loss)

    # hard negatives (sent0, sent1, hard_neg): negatives are (B, k, d)
    loss = loss_fn(enc(s0), enc(s1), enc(neg).view(B, 1, -1))

    # cached: any batch size at the memory of mini_batch_size rows (gradients land in enc's parameters)
    loss = cached_backward([(enc, s0), (enc, s1)], loss_fn, mini_batch_size=64,
                           backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(model))

    # MoCo: see textcl.losses.moco

Never imports ``textcl.train``: the trainer builds on these, not the other way round.
"""
from .angle import AnglE, angle, angle_similarity
from .cosent import CoSENT, cosent, cosent_from_similarities
from .distill import CosineDistill, cosine_distill
from .gather import all_gather_no_grad, all_gather_with_grad, gather_sizes, world_info
from .gradcache import RandContext, cached_backward, split_batch
from .infonce import SIMILARITIES, InfoNCE, info_nce, nt_xent, pairwise_similarity
from .guide import guided_mask
from .masking import NO_GROUP, check_group_ids, false_negative_mask, group_keys, text_keys
from .matryoshka import Matryoshka
from .moco import MoCoQueue, MomentumEncoder, moco_loss, momentum_update

__all__ = [
    "InfoNCE", "info_nce", "nt_xent", "pairwise_similarity", "SIMILARITIES",
    "CoSENT", "cosent", "cosent_from_similarities", "CosineDistill", "cosine_distill",
    "AnglE", "angle", "angle_similarity", "Matryoshka", "guided_mask",
    "false_negative_mask", "text_keys", "group_keys", "check_group_ids", "NO_GROUP",
    "all_gather_with_grad", "all_gather_no_grad", "gather_sizes", "world_info",
    "cached_backward", "split_batch", "RandContext",
    "MomentumEncoder", "MoCoQueue", "momentum_update", "moco_loss",
]
