"""The linear siamese network: the two-view model, its dynamics and what a run records.

``data`` (the two-view model X, X'), ``dynamics`` (the vector field and the flow / GD / SGD
integrators), ``batched_ode`` and ``exponential`` (batched Runge-Kutta and Lawson steps),
``sweep`` (many runs as one batch), ``records`` (gains, spectra, alignment), ``simulation``
(one run compared with the closed forms) and ``downstream`` / ``regression`` (sample complexity).
The theory they are checked against is ``linssl.theory``; the predictor rules are ``linssl.predictors``.
"""
