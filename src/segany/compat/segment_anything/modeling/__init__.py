"""``segment_anything.modeling.Sam``: the model class (segany's, same attributes and state-dict keys)."""
from ....models.sam import Sam

__all__ = ["Sam"]
