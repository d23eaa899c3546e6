"""Evaluation of promptable segmentation: simulated clicks, metrics and the published protocols."""
from .clicker import Click, next_click_ritm, next_click_sam
from .metrics import iou, miou_at, noc, nof
from .protocols import PROTOCOLS, evaluate, format_table

__all__ = ["PROTOCOLS", "Click", "evaluate", "format_table", "iou", "miou_at", "next_click_ritm", "next_click_sam", "nof", "noc"]
