"""Vigil's application layer: the jobs the ``vigil`` command (and the benchmarks and tests) run.

- :mod:`workflows.triage` and :mod:`workflows.imaging`: the training recipes (train, model card, ONNX export and
  parity, evaluation, registration in MLflow), the triage model card in :mod:`workflows.triage_card`;
- :mod:`workflows.release`: the release workflow (every decision taken by :mod:`fairness` and the safety suite of
  :mod:`evaluation`), with its evidence in :mod:`workflows.release_checks`, the safety suite as the gate runs it in
  :mod:`workflows.release_safety` and the release card in :mod:`workflows.release_card`;
- :mod:`workflows.job`, :mod:`workflows.evaluate`, :mod:`workflows.safety`, :mod:`workflows.second_read`: the main
  job and the other commands' work;
- :mod:`workflows.serve`: serving what was released (uvicorn, the supervised DICOM node), from the MLflow registry
  through :mod:`workflows.registry_locator`;
- :mod:`workflows.bench`, :mod:`workflows.logs`: the imaging latency benchmark, logging set-up.

It composes ``models``, ``training``, ``evaluation``, ``fairness`` and ``serving`` and holds no metric or fairness
logic of its own; nothing below it imports it, and it never imports the CLI (:mod:`vigil`).
"""
