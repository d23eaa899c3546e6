"""One frame to the next without weights: optical flow carries the mask, GrabCut snaps it to the edges.

Everything here works at the tracker's working resolution on BGR uint8 frames and HxW bool masks.

* :class:`FlowField` — dense backward optical flow (OpenCV DIS) from the new frame to the previous
  one, computed once per frame pair and shared by every object.
* :func:`warp_mask` — the previous mask pulled along the flow (``cv2.remap``): where each pixel of
  the new frame came from; :func:`rigid_warp` — the mask moved as one piece by the similarity
  transform that fits the object's flow (RANSAC).
* :func:`refine_mask` — GrabCut (OpenCV, colour models as the classic engine fits them) in a thin
  band around a guess, inside a crop around it: the eroded guess is definite object, the outside
  of the dilated guess definite background. The refined mask is taken only when it agrees with the
  guess (GrabCut can leak into a same-coloured background). Measured on the DAVIS clips, a band of
  a few pixels is best: wider bands let colour eat dark object parts next to dark ground.
* :func:`propagate_mask` — the guesses refined, the one whose outline follows stronger edges
  kept, the object's colours deciding where the cut and its guess disagree.
* :class:`Appearance` — hue/saturation histograms of the object and its surroundings on a prompted
  frame; :func:`redetect` finds the object again by histogram back-projection when the track is lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .grabcut import fit_colour_model, largest_components
from .scoring import boundary_contrast

HIST_BINS = (16, 16)  # hue, saturation
HIST_RANGES = [0, 180, 0, 256]
HIST_PRIOR = 1e-4  # added to both normalised histograms: a colour seen in neither is undecided


@dataclass(frozen=True)
class PropagationConfig:
    """Settings of the frame-to-frame step (tuned on the four DAVIS 2016 clips, see README).

    ``band``: half-width of the undecided band around the warped mask, as a fraction of the square
    root of its area (at least ``min_band`` pixels). ``min_agreement``: IoU the refined mask needs
    with the warped one to replace it. ``lost_fraction``: a mask shrinking below this fraction of
    the previous frame's area in one step counts as lost. ``min_area``: fraction of the frame below
    which a mask is empty. ``min_likeness``: a mask whose
    colours are less object-like than this fraction of the prompted mask's counts as lost
    (:meth:`Appearance.lost`); ``redetect_threshold``: P(object | colour) a pixel needs to be a
    candidate when searching for a lost object, ``redetect_band`` the band (fraction of the square
    root of the expected area) GrabCut then refines it in. ``vote``: P(object | colour) that
    decides a pixel where the refined mask and its guess disagree. Within ``colour_band`` (fraction
    of the square root of the area) of the boundary, a pixel whose P(object | colour) is at least
    ``sure_object`` joins the mask, one at most ``sure_background`` leaves it. ``area_memory``: the
    expected area a lost object is searched for with follows a growing mask at once and a shrinking
    one by at most this factor a frame (an object sliding behind an occluder keeps its size); a
    tracked mask below ``min_expected`` times that area counts as lost (the track slid off the
    object, or the object is hidden), and the object is searched for.
    """

    band: float = 0.02
    min_band: int = 2
    max_band: int = 30
    min_agreement: float = 0.6
    lost_fraction: float = 0.2
    min_area: float = 2e-4
    redetect_threshold: float = 0.6
    min_likeness: float = 0.2
    redetect_band: float = 0.15
    vote: float = 0.5
    colour_band: float = 0.2
    sure_object: float = 0.95
    sure_background: float = 0.05
    area_memory: float = 0.9
    min_expected: float = 0.1


def to_gray(bgr: np.ndarray) -> np.ndarray:
    """The luminance the flow is computed on."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


class FlowField:
    """Backward dense flow of one frame pair on the working grid: for each pixel of the new frame,
    where it was before (``map_x``, ``map_y``, for ``cv2.remap``).

    Without ``box`` the flow of the whole working frames. With ``box`` (x0, y0, x1, y1 working
    pixels, end excluded) only that window moves, and its flow is computed from the frames given
    (any resolution, e.g. the video's own) magnified so the window's longer side is about
    ``side`` pixels (at most 4x): small objects get the detail the flow needs."""

    def __init__(self, new_gray: np.ndarray, old_gray: np.ndarray, work_size: tuple[int, int] | None = None,
                 box: tuple[int, int, int, int] | None = None, side: int = 384) -> None:
        h, w = work_size or new_gray.shape
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.map_x, self.map_y = grid_x, grid_y
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if box is None:
            flow = dis.calc(new_gray, old_gray, None)
            self.map_x, self.map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
            return
        x0, y0, x1, y1 = box
        fh, fw = new_gray.shape
        sy, sx = fh / h, fw / w
        full = (slice(int(y0 * sy), max(int(np.ceil(y1 * sy)), int(y0 * sy) + 1)),
                slice(int(x0 * sx), max(int(np.ceil(x1 * sx)), int(x0 * sx) + 1)))
        scale = float(np.clip(side / max(x1 - x0, y1 - y0), 1.0, 4.0))
        size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
        new = cv2.resize(np.ascontiguousarray(new_gray[full]), size, interpolation=cv2.INTER_LINEAR)
        old = cv2.resize(np.ascontiguousarray(old_gray[full]), size, interpolation=cv2.INTER_LINEAR)
        flow = cv2.resize(dis.calc(new, old, None), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        self.map_x[y0:y1, x0:x1] += flow[..., 0] * ((x1 - x0) / size[0])
        self.map_y[y0:y1, x0:x1] += flow[..., 1] * ((y1 - y0) / size[1])


def object_window(mask: np.ndarray, margin: float = 0.5, min_margin: int = 16) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the mask's bounding box grown by ``margin`` times its longer side (at least
    ``min_margin`` pixels) on every side, inside the frame: where the object can be on the next frame."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    pad = max(min_margin, round(margin * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)))
    return (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0),
            min(int(xs.max()) + pad + 1, w), min(int(ys.max()) + pad + 1, h))


def warp_mask(mask: np.ndarray, flow: FlowField) -> np.ndarray:
    """``mask`` (on the old frame) carried to the new frame along ``flow``."""
    warped = cv2.remap(mask.astype(np.float32), flow.map_x, flow.map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return warped > 0.5


def rigid_warp(mask: np.ndarray, flow: FlowField) -> np.ndarray | None:
    """``mask`` moved as one piece: the similarity transform (shift, rotation, scale) that best
    explains the flow of the object's pixels (RANSAC), or None when the flow does not say."""
    h, w = mask.shape
    old_x, old_y = flow.map_x, flow.map_y  # new-frame pixels whose flow leads back into the object
    ox = np.clip(np.round(old_x).astype(int), 0, w - 1)
    oy = np.clip(np.round(old_y).astype(int), 0, h - 1)
    inside = mask[oy, ox]
    ny, nx = np.nonzero(inside)
    if len(nx) < 10:
        return None
    step = max(1, len(nx) // 2000)
    dst = np.stack([nx[::step], ny[::step]], axis=1).astype(np.float32)
    src = np.stack([old_x[ny[::step], nx[::step]], old_y[ny[::step], nx[::step]]], axis=1).astype(np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    if matrix is None:
        return None
    moved = cv2.warpAffine(mask.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    return moved > 0.5


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def band_radius(mask: np.ndarray, band: float, config: PropagationConfig) -> int:
    """Half-width of the undecided band around ``mask``: ``band`` times the square root of its area."""
    r = round(band * np.sqrt(np.count_nonzero(mask)))
    return int(np.clip(r, config.min_band, config.max_band))


def cut_band(image: np.ndarray, guess: np.ndarray, r: int) -> np.ndarray:
    """GrabCut of the band of half-width ``r`` around ``guess`` inside a crop around it: the eroded
    guess is definite object, the outside of the dilated guess definite background; the colour
    models are fitted on the guess and on the rest of the crop, and kept fixed for the cut."""
    m = guess.astype(np.uint8)
    inner = cv2.erode(m, _disk(r)).astype(bool)
    outer = cv2.dilate(m, _disk(r)).astype(bool)
    ys, xs = np.nonzero(outer)
    h, w = guess.shape
    pad = r + 2
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    crop = (slice(y0, y1), slice(x0, x1))
    trimap = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, dtype=np.uint8)
    trimap[outer[crop]] = cv2.GC_PR_BGD
    trimap[guess[crop]] = cv2.GC_PR_FGD
    trimap[inner[crop]] = cv2.GC_FGD
    roi = np.ascontiguousarray(image[crop])
    background = np.isin(trimap, (cv2.GC_BGD, cv2.GC_PR_BGD))
    if not background.any() or background.all():
        return guess
    bgd_model = fit_colour_model(roi[background])
    fgd_model = fit_colour_model(roi[~background])
    cv2.grabCut(roi, trimap, None, bgd_model, fgd_model, 1, cv2.GC_EVAL_FREEZE_MODEL)
    cut = np.zeros_like(guess)
    cut[crop] = largest_components(np.isin(trimap, (cv2.GC_FGD, cv2.GC_PR_FGD)))
    return cut


def refine_mask(image: np.ndarray, guess: np.ndarray, config: PropagationConfig) -> np.ndarray:
    """``guess`` snapped to the object's edges in ``image`` (:func:`cut_band`); the guess itself
    where the cut disagrees with it (IoU below ``min_agreement``)."""
    if not guess.any():
        return guess
    refined = cut_band(image, guess, band_radius(guess, config.band, config))
    return refined if mask_iou(refined, guess) >= config.min_agreement else guess


def propagate_mask(image: np.ndarray, gradient: np.ndarray, previous: np.ndarray, flow: FlowField,
                   config: PropagationConfig, appearance: Appearance | None = None) -> np.ndarray:
    """The previous frame's mask on the new frame. Three guesses: the mask warped pixel by pixel
    (:func:`warp_mask`: follows deformations, tears at occluders), moved as one piece
    (:func:`rigid_warp`: keeps the shape through occluders and blur) and their union, each
    refined (:func:`refine_mask`); the one whose outline follows stronger edges
    (:func:`~.scoring.boundary_contrast`) wins. GrabCut's smoothness wears thin parts (legs,
    spokes) away a little on every frame, so where the cut and its guess disagree, the object's
    colours (``appearance``, P(object | colour) >= ``config.vote``) decide, and near the boundary
    colours that are surely the object's, or surely not, override the shape (parts the flow missed:
    wheels, a growing object). Empty when the mask collapses in one step (lost)."""
    guesses = [warp_mask(previous, flow)]
    moved = rigid_warp(previous, flow)
    if moved is not None:
        guesses.append(moved)
        guesses.append(moved | guesses[0])
    area = np.count_nonzero(previous)
    floor = max(config.min_area * previous.size, config.lost_fraction * area)
    candidates = [(g, refine_mask(image, g, config)) for g in guesses if np.count_nonzero(g) >= floor]
    if not candidates:
        return np.zeros_like(previous)
    guess, best = max(candidates, key=lambda c: boundary_contrast(c[1], gradient))
    if appearance is None or not best.any():
        return best
    like = appearance.likelihood(image)
    disagree = guess ^ best  # where the cut and its guess disagree, the object's colours decide
    best = best.copy()
    best[disagree] = like[disagree] >= config.vote
    if not best.any():
        return best
    # near the boundary, colours that are surely the object's (or surely not) win over the shape
    r = int(np.clip(round(config.colour_band * np.sqrt(np.count_nonzero(best))), 1, 40))
    m = best.astype(np.uint8)
    near = cv2.dilate(m, _disk(r)).astype(bool) & ~cv2.erode(m, _disk(r)).astype(bool)
    best[near & (like >= config.sure_object)] = True
    best[near & (like <= config.sure_background)] = False
    return largest_components(best)


@dataclass(frozen=True)
class Appearance:
    """Colour of an object against its surroundings on a prompted frame, and its size there."""

    ratio: np.ndarray  # HIST_BINS float32: P(object | colour), from the two histograms
    area: int
    score: float = 0.0  # mean P(object | colour) over the mask on its own frame

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> Appearance | None:
        """The object's appearance on a prompted frame, or None for an empty mask."""
        if not mask.any():
            return None
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        fg = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), list(HIST_BINS), HIST_RANGES)
        bg = cv2.calcHist([hsv], [0, 1], (~mask).astype(np.uint8), list(HIST_BINS), HIST_RANGES)
        fg /= max(fg.sum(), 1.0)
        bg /= max(bg.sum(), 1.0)
        ratio = ((fg + HIST_PRIOR) / (fg + bg + 2 * HIST_PRIOR)).astype(np.float32)  # unseen colours: 0.5
        appearance = cls(ratio, int(np.count_nonzero(mask)))
        return cls(ratio, appearance.area, appearance.likeness(image, mask))

    def likelihood(self, image: np.ndarray) -> np.ndarray:
        """P(object | colour) of every pixel of a BGR image (histogram back-projection)."""
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        return cv2.calcBackProject([hsv], [0, 1], self.ratio, HIST_RANGES, 255).astype(np.float32) / 255

    def likeness(self, image: np.ndarray, mask: np.ndarray) -> float:
        """Mean P(object | colour) over ``mask`` (0 for an empty mask)."""
        return float(self.likelihood(image)[mask].mean()) if mask.any() else 0.0

    def lost(self, image: np.ndarray, mask: np.ndarray, config: PropagationConfig) -> bool:
        """Whether ``mask`` no longer looks like the object: its colours are less than
        ``config.min_likeness`` times as object-like as on the prompted frame (the object left or
        is hidden, and the mask stayed on the background)."""
        return self.likeness(image, mask) < config.min_likeness * self.score


def redetect(image: np.ndarray, appearance: Appearance, expected_area: int, config: PropagationConfig) -> np.ndarray:
    """The object found again anywhere in ``image`` from its colours: the back-projected region
    closest in size to ``expected_area`` (within 4x either way), refined by GrabCut in a wide band
    (``redetect_band``); empty when none."""
    likelihood = cv2.GaussianBlur(appearance.likelihood(image), (0, 0), 2.0)
    candidate = (likelihood > config.redetect_threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    empty = np.zeros(image.shape[:2], dtype=bool)
    if count <= 1 or expected_area <= 0:
        return empty
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    closeness = np.abs(np.log(areas / expected_area))
    best = int(np.argmin(closeness))
    if closeness[best] > np.log(4.0):
        return empty
    r = int(np.clip(round(config.redetect_band * np.sqrt(expected_area)), config.min_band, config.max_band))
    return cut_band(image, labels == best + 1, r)
