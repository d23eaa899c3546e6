"""Evaluation of promptable segmentation: simulated clicks, metrics and the published protocols,
the video object segmentation benchmark (:mod:`.vos`) and box / mask AP of text routes (:mod:`.detect`)."""
from .detect import evaluate_detect, format_detect_table
from .clicker import Click, next_click_ritm, next_click_sam
from .metrics import iou, miou_at, noc, nof
from .protocols import PROTOCOLS, evaluate, format_table
from .vos import evaluate_vos, f_measure, format_vos_table

__all__ = ["PROTOCOLS", "Click", "evaluate", "evaluate_detect", "evaluate_vos", "f_measure", "format_detect_table", "format_table", "format_vos_table", "iou", "miou_at", "next_click_ritm", "next_click_sam", "noc", "nof"]
