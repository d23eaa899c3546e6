"""``segment_anything.utils``: the transforms notebooks import."""
