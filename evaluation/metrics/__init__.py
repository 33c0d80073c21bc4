"""Pure metric functions, one module per family; import each from its module.

- :mod:`evaluation.metrics.discrimination`: AUROC and AUPRC (how well a score ranks outcomes);
- :mod:`evaluation.metrics.calibration`: reliability curve, ECE, calibration slope and intercept, O/E ratio;
- :mod:`evaluation.metrics.decision`: binary decisions at an operating point (sensitivity, specificity, PPV)
  and decision curves (net benefit);
- :mod:`evaluation.metrics.acuity`: triage-level agreement (kappa, under- and over-triage, confusion);
- :mod:`evaluation.metrics.inputs`: the validation every family applies to its inputs.

Everything here takes plain arrays and returns plain floats or numpy arrays (numpy, scipy and scikit-learn
only). Inputs are validated once, at the edge, and a bad input raises
:class:`models.errors.InputValidationError` (a ``ValueError``) whose message names the argument and the
problem, e.g. ``"p must be in [0, 1]; got max 1.3"``. A metric that is undefined for the data it is given
(one outcome class, no high-acuity patients) returns ``nan`` rather than raising, so that a bootstrap can
skip that resample and count it.

Conventions
-----------
* ``y`` is a binary outcome (0/1 or bool), ``p`` a predicted probability of ``y == 1``.
* Triage levels follow :data:`models.labels.ACUITY_LEVELS`: 1 is the most urgent, 5 the least.
  Under-triage means a predicted level that is *less urgent* (numerically greater) than the true level.
"""
