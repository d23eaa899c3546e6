"""The networks of Segment Anything as plain ``nn.Module``s with the official tensor names."""
from .config import SamConfig, TinyViTConfig, ViTConfig
from .sam import Sam

__all__ = ["Sam", "SamConfig", "TinyViTConfig", "ViTConfig"]
