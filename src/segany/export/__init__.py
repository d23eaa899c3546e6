"""Writers of masks in the formats users' tools read (PNG, overlays, COCO, SA-1B)."""
