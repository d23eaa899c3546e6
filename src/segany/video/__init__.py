"""Video object segmentation with SAM 2 / 2.1: prompt objects on any frame, track them with memory."""
from .memory_store import FrameOutput, FrameStore
from .sam2_video import Sam2VideoPredictor, VideoState

__all__ = ["FrameOutput", "FrameStore", "Sam2VideoPredictor", "VideoState"]
