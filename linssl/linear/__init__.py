"""The linear siamese network: the two-view model, its dynamics and what a run records.

``data`` (the two-view model X, X'), ``dynamics`` (the vector field, ``FlowOptions``, the flow and GD
integrators), ``sgd`` (minibatch SGD on sampled views), ``batched_ode`` and ``exponential`` (batched
Runge-Kutta and exponential steps; ``etd`` their linear part), ``scales`` (defaults in the problem's own
units), ``rotation`` (the output-rotation symmetry), ``sweep`` (many runs as one batch), ``records``
(gains, spectra, alignment), ``simulation`` (one run compared with the closed forms; ``hints``), and
``downstream`` / ``regression`` (sample complexity). The theory they are checked against is
``linssl.theory``; the predictor rules are ``linssl.predictors``.
"""
