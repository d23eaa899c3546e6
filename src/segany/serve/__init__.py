"""The data engine's first stage: an HTTP API and a web page where a click on an image gives a mask.

``create_app(images_dir, model)`` builds the FastAPI app; ``segany serve`` runs it with uvicorn.
"""
from .app import create_app

__all__ = ["create_app"]
