"""Vigil's application layer: the jobs the ``vigil`` command (and the benchmarks and tests) run.

- :mod:`workflows.triage` and :mod:`workflows.imaging`: the training recipes (train, model card, ONNX export and
  parity, evaluation, registration in MLflow);
- :mod:`workflows.release`: the release workflow (every decision taken by :mod:`fairness` and the safety suite of
  :mod:`evaluation`);
- :mod:`workflows.serve`: serving what was released (the registry locator, uvicorn, the supervised DICOM node);
- :mod:`workflows.bench`, :mod:`workflows.logs`: the imaging latency benchmark, logging set-up.

It composes ``models``, ``training``, ``evaluation``, ``fairness`` and ``serving`` and holds no metric or fairness
logic of its own; nothing below it imports it, and it never imports the CLI (:mod:`vigil`).
"""
