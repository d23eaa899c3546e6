"""Deployment artefacts: ONNX export of the encoder and the prompt decoder (official decoder signature)."""
