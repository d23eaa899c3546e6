"""Writers of masks in the formats users' tools read (PNG, overlays, COCO RLE and polygons, SA-1B, YOLO-seg)."""
