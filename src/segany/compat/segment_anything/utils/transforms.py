"""``segment_anything.utils.transforms.ResizeLongestSide``: segany's, which has the official methods."""
from ....predict.transforms import ResizeLongestSide

__all__ = ["ResizeLongestSide"]
