"""SAM 2 / 2.1 as plain ``nn.Module``s with the official tensor names (the image encoder is injected)."""
from .config import MemoryAttentionConfig, MemoryEncoderConfig, RoPEAttentionConfig, Sam2Config, SinePositionConfig
from .sam2 import NO_OBJ_SCORE, FrameFeatures, ObjectPointer, Sam2, SamHeadsOutput, SpatialMemory, build_sam2

__all__ = [
    "NO_OBJ_SCORE", "FrameFeatures", "MemoryAttentionConfig", "MemoryEncoderConfig", "ObjectPointer",
    "RoPEAttentionConfig", "Sam2", "Sam2Config", "SamHeadsOutput", "SinePositionConfig", "SpatialMemory", "build_sam2",
]
