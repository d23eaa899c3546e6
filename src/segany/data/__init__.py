"""Data in and out: reading images, evaluation datasets, and the mask formats users' tools read (``formats``)."""
