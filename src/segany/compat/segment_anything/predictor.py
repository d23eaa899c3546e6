"""``segment_anything.SamPredictor``: segany's :class:`~segany.predict.predictor.SamPredictor` under the official signature."""
from __future__ import annotations

from ...errors import ConfigError
from ...models.sam import Sam
from ...predict.predictor import SamPredictor as _SamPredictor


class SamPredictor(_SamPredictor):
    """The official predictor API (``set_image``, ``set_torch_image``, ``predict``, ``predict_torch``,
    ``get_image_embedding``, ``reset_image``, ``model``, ``transform``, ``features``, ``device``,
    ``original_size``, ``input_size``, ``is_image_set``) on segany's engine.

    Differences from the official class: bad prompts raise :class:`~segany.errors.PromptError`
    instead of an ``AssertionError`` or a torch error, and prompts outside the image are refused.
    """

    def __init__(self, sam_model: Sam) -> None:
        """``sam_model``: a model from :data:`sam_model_registry` or ``segany.load_model``."""
        if not isinstance(sam_model, Sam):
            raise ConfigError(
                f"SamPredictor needs a SAM model (from sam_model_registry or segany.load_model), got {type(sam_model).__name__}; "
                "use segany.Predictor for other engines"
            )
        super().__init__(sam_model)
