"""Automatic mask generation (official ``SamAutomaticMaskGenerator`` semantics): point grids and crops,
low-res filtering and exact scoring, NMS."""
