"""Recovery: fine-tuning after compression, with knowledge distillation, resumable, distributed.

``finetune`` is the one training loop (:func:`torchslim.training.fit`) plus what compression
needs: the zeros a pruned model already has stay zero through every optimizer step, and the
uncompressed model can teach the compressed one.
"""

from torchslim.recovery.finetune import FinetuneConfig, FinetuneResult, KeepSparsity, finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "KeepSparsity", "finetune"]
