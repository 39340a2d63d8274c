"""The deep backend: ResNets trained with DirectCopy, DirectPred, DirectSet(α) or a trained predictor.

Floors: ``models`` / ``augment`` / ``datasets`` / ``lars`` / ``recipes`` (parts) -> ``config``
(``DeepConfig`` and the builders) -> ``flags`` (deep-train's flags, generated from it), ``schedules``,
``ranks``, ``sharding``, ``step`` (one ``TrainingStep``), ``monitor``, ``checkpoint``, ``evaluate`` ->
``loop`` (the training loop) -> ``cli_train`` / ``cli_eval`` / ``cli_recipes`` (faces).
"""
