"""Video object segmentation with SAM 2 / 2.1: prompt objects on any frame, track them with memory."""
