"""``liftcam serve``: a local web app to compare every method's map of a photo, with the numbers.

:class:`Workbench` holds what the app computes (plain functions, tested directly); :func:`create_app` and
:func:`serve` (FastAPI and uvicorn, the ``serve`` extra) put it behind a page.
"""

from __future__ import annotations

from .workbench import DEFAULT_METHODS, MAX_UPLOAD_BYTES, UploadError, Workbench, read_upload

__all__ = ["DEFAULT_METHODS", "MAX_UPLOAD_BYTES", "UploadError", "Workbench", "read_upload"]
