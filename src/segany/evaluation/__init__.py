"""Evaluation of promptable segmentation: simulated clicks, metrics and the published protocols,
and the video object segmentation benchmark (:mod:`.vos`)."""
from .clicker import Click, next_click_ritm, next_click_sam
from .metrics import iou, miou_at, noc, nof
from .protocols import PROTOCOLS, evaluate, format_table
from .vos import evaluate_vos, f_measure, format_vos_table

__all__ = ["PROTOCOLS", "Click", "evaluate", "evaluate_vos", "f_measure", "format_table", "format_vos_table", "iou", "miou_at", "next_click_ritm", "next_click_sam", "noc", "nof"]
