"""Drop-in APIs of other packages on segany's engine.

:mod:`segany.compat.segment_anything` mirrors Meta's ``segment_anything`` package (and
MobileSAM's ``mobile_sam``, which adds ``vit_t``): code written for it runs on segany with only
the import line changed.
"""
