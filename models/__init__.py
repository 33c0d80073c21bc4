"""Vigil: shared contract (labels, triage record, NEWS2, features, networks, ONNX runtime, model card)."""
