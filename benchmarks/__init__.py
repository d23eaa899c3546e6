"""Benchmarks of segany against the official implementation (not part of the test suite).

``python -m benchmarks.run`` is the speed suite (encoder, decoder, reduced-precision quality);
``benchmarks/everything.py`` and ``benchmarks/serve_load.py`` measure the automatic mask generator
and the server.
"""
