"""Remove, fill and replace anything: a mask in, the image with the hole filled out.

Engines (all :class:`Inpainter`): :class:`ClassicInpainter` (OpenCV, weight-free, the offline
default), :class:`LamaInpainter` (big-lama TorchScript) and, with the ``diffusion`` extra,
:class:`DiffusionInpainter` (Stable Diffusion inpainting through ``diffusers``: fill a hole from a
text prompt, or replace everything but the object).
"""
from .base import Inpainter, check_inputs, dilate_mask
from .classic import ClassicInpainter, method_names
from .lama import LamaInpainter

__all__ = ["ClassicInpainter", "Inpainter", "LamaInpainter", "check_inputs", "dilate_mask", "method_names"]
