"""SAM inference: the predictor (official ``SamPredictor`` semantics), the transforms into the model frame,
the runtime (dtype, compile, quantisation, onnxruntime) and the inference-optimised decoder over the model's weights."""
