"""Mask formats users' tools read and write: PNG, overlays, COCO, SA-1B, COCO polygons, YOLO-seg labels."""
