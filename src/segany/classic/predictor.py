"""The classic engine behind the :class:`segany.Predictor` interface: GrabCut seeded by the prompts.

Same call, same shapes, same coordinate conventions as the SAM predictor (points (x, y) in pixels
of the original image, boxes XYXY, images HWC RGB uint8), so evaluation code, the CLI and the
server use either engine unchanged. ``low_res_logits`` are signed distances in SAM's 256x256 frame
(:mod:`.lowres`); fed back as ``mask_input`` they seed the next GrabCut with the previous mask,
at full working resolution when they are exactly the logits this predictor last returned.

Prompts are checked like the SAM predictor's (typed :class:`~segany.errors.PromptError` for a
box or point outside the image, reversed corners, no positive prompt). Like SAM, a degenerate box
(thinner than :data:`MIN_BOX_SIDE` working pixels: a dot or a line, e.g. ``x0 == x1``) still gives
a mask: GrabCut cannot cut inside it, so it is read as positive clicks on its centre line
(:func:`stroke_points`), and segments the object under it.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..data.images import check_image_array
from ..engine import ImageFeatures
from ..errors import PredictorStateError, PromptError, UnsupportedOperationError
from ..prompts import check_box, check_mask_input, check_points
from .grabcut import Seeds, initial_trimap, keep_clicked_components, largest_components, paint_clicks, run_grabcut
from .lowres import LOW_RES, logits_to_image, mask_to_logits, signed_distance
from .model import ClassicModel
from .scoring import boundary_contrast, gradient_magnitude

MULTIMASK_SEED_SCALES = (0.5, 1.0, 2.0)  # lone-click seed radii of the three candidates
MIN_BOX_SIDE = 2.0  # working pixels: a thinner box is a line or a dot, read as positive clicks on it


def stroke_points(box: np.ndarray) -> np.ndarray:
    """(K, 2) positive clicks standing for a degenerate XYXY box: its centre, and the ends of its
    centre line along any side that is not degenerate (a zero-area box is a drag that did not move,
    or a line drawn over the object)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    points = [(cx, cy)]
    if x1 - x0 >= MIN_BOX_SIDE:
        points += [(x0, cy), (x1, cy)]
    if y1 - y0 >= MIN_BOX_SIDE:
        points += [(cx, y0), (cx, y1)]
    return np.array(points, dtype=np.float64)


class ClassicPredictor:
    """Promptable segmentation without weights (see the module docstring)."""

    def __init__(self, model: ClassicModel | None = None) -> None:
        self.model = model or ClassicModel()
        self.reset_image()

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.original_size: tuple[int, int] | None = None
        self._work: np.ndarray | None = None
        self._gradient: np.ndarray | None = None
        self._last: list[tuple[np.ndarray, np.ndarray]] = []  # (low-res logits, working mask) of the last call

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Take an HWC uint8 image (``image_format`` "RGB" or "BGR") and prepare its working copy."""
        check_image_array(image)
        if image_format not in ("RGB", "BGR"):
            raise PromptError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        self.reset_image()
        bgr = np.ascontiguousarray(image[..., ::-1] if image_format == "RGB" else image)
        h, w = bgr.shape[:2]
        scale = min(1.0, self.model.config.max_side / max(h, w))
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        self._work = bgr
        self._gradient = gradient_magnitude(bgr)
        self.original_size = (h, w)
        self.is_image_set = True

    def image_features(self) -> ImageFeatures:
        """The current image's working copy and its gradient (what a cache of images holds)."""
        if not self.is_image_set:
            raise PredictorStateError("no image is set: call set_image(image) first")
        assert self._work is not None and self.original_size is not None
        return ImageFeatures((self._work, self._gradient), self.original_size, self._work.shape[:2])

    def set_image_features(self, features: ImageFeatures) -> None:
        """Take another classic predictor's working copy of an image."""
        work, gradient = features.maps
        self.reset_image()
        self._work, self._gradient = work, gradient
        self.original_size = features.original_size
        self.is_image_set = True

    def get_image_embedding(self):
        """The classic engine has no embedding: raises :class:`~segany.errors.UnsupportedOperationError`."""
        raise UnsupportedOperationError("the classic engine has no image embedding; use a SAM model for embeddings")

    def predict_torch(self, *args, **kwargs):
        """Batched tensor prompts are a SAM feature: raises :class:`~segany.errors.UnsupportedOperationError`."""
        raise UnsupportedOperationError("the classic engine has no batched tensor path; call predict() per prompt")

    # --- prompts ---------------------------------------------------------------------------------

    def _scale(self) -> tuple[float, float]:
        assert self._work is not None and self.original_size is not None
        return self._work.shape[1] / self.original_size[1], self._work.shape[0] / self.original_size[0]

    def _seeds(self, point_coords, point_labels, box) -> Seeds:
        assert self.original_size is not None
        sx, sy = self._scale()
        positive = negative = np.zeros((0, 2))
        points = check_points(point_coords, point_labels, self.original_size)
        box_np = check_box(box, self.original_size)
        if points is not None:
            coords, labels = points
            coords = coords.astype(np.float64) * (sx, sy)
            positive, negative = coords[labels == 1], coords[labels == 0]
        box_work = None
        if box_np is not None:
            box_work = box_np.astype(np.float64).reshape(4) * (sx, sy, sx, sy)
            if min(box_work[2] - box_work[0], box_work[3] - box_work[1]) < MIN_BOX_SIDE:
                positive = np.concatenate([positive, stroke_points(box_work)])
                box_work = None
        return Seeds(positive, negative, box_work)

    def _prior(self, mask_input) -> np.ndarray | None:
        if mask_input is None:
            return None
        assert self._work is not None
        logits = check_mask_input(mask_input, LOW_RES)[0].astype(np.float32)
        for previous, mask in self._last:
            if np.array_equal(previous, logits):
                return mask
        return logits_to_image(logits, self._work.shape[:2]) > 0

    # --- prediction ------------------------------------------------------------------------------

    def _segment(self, seeds: Seeds, prior: np.ndarray | None, seed_scale: float) -> np.ndarray:
        assert self._work is not None
        config = self.model.config
        shape = self._work.shape[:2]
        seed_radius = max(config.click_radius + 1, round(config.seed_radius * seed_scale * max(shape)))
        trimap = initial_trimap(shape, seeds, prior, seed_radius)
        paint_clicks(trimap, seeds, prior, config.click_radius, config.click_reach)
        mask = run_grabcut(self._work, trimap, config.iterations)
        if len(seeds.positive):
            return keep_clicked_components(mask, seeds.positive)
        return largest_components(mask)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set: (C, H, W) bool masks (float logits with ``return_logits``),
        (C,) scores in [0, 1] (boundary contrast, the engine's stand-in for predicted IoU) and
        (C, 256, 256) float32 low-res logits. C is 3 with ``multimask_output``, else 1."""
        if not self.is_image_set:
            raise PredictorStateError("no image is set: call set_image(image) before predicting")
        assert self._work is not None and self._gradient is not None and self.original_size is not None
        seeds = self._seeds(point_coords, point_labels, box)
        prior = self._prior(mask_input)
        if len(seeds.positive) == 0 and seeds.box is None and prior is None:
            raise PromptError("the classic engine needs a positive point, a box or a mask_input to know the object")
        scales = MULTIMASK_SEED_SCALES if multimask_output else (1.0,)
        works = [self._segment(seeds, prior, s) for s in scales]
        scores = np.array([boundary_contrast(m, self._gradient) for m in works], dtype=np.float32)
        low_res = np.stack([mask_to_logits(m) for m in works])
        self._last = list(zip(low_res, works))
        h, w = self.original_size
        full = np.stack([cv2.resize(signed_distance(m), (w, h), interpolation=cv2.INTER_LINEAR) for m in works])
        return (full if return_logits else full > 0), scores, low_res
