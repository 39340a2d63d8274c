"""Deep backend: dataset readers, batched augmentations, ResNets, the DirectPred/DirectCopy trainer, evaluation."""
