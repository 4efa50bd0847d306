"""``liftcam serve``: the web app's HTTP side, on FastAPI (served by uvicorn).

Why FastAPI and not Gradio: the app is one static page and a few JSON routes over :class:`.Workbench`, so a
small ASGI app keeps the dependencies light (Gradio brings a large front-end bundle and services of its own),
the page under our control (stable element ids for the browser test) and every route testable with
FastAPI's test client. Synchronous routes run in uvicorn's thread pool; the workbench runs one computation at
a time and refuses requests beyond a short queue.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..errors import LiftCamError
from ..methods import METHODS, method_class
from .workbench import DEFAULT_METHODS, MAX_UPLOAD_BYTES, UploadError, Workbench, read_upload


def create_app(workbench: Workbench) -> FastAPI:
    """The app: ``/`` the page, ``/api/...`` the JSON routes, each error a 400 with ``{"error": message}``."""
    app = FastAPI(title="liftcam", docs_url=None, redoc_url=None)
    page = files("liftcam.webapp").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(LiftCamError)
    def _error(_request: Request, exc: LiftCamError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/setup")
    def setup() -> dict[str, Any]:
        """What the page lists at start: models, methods (with their facts), samples, the defaults."""
        return {
            "model": workbench.default_model,
            "models": workbench.models(),
            "methods": [
                {"name": m, "sampled": method_class(m).sampled, "coefficients": method_class(m).has_coefficients}
                for m in METHODS
            ],
            "default_methods": list(DEFAULT_METHODS),
            "samples": sorted(workbench.samples()),
            "max_upload_mb": MAX_UPLOAD_BYTES / 2**20,
        }

    @app.get("/api/layers")
    def layers(model: str) -> dict[str, Any]:
        return workbench.layers(model)

    @app.get("/api/classes")
    def classes(model: str) -> list[str]:
        return workbench.classes(model)

    async def _image(file: UploadFile | None, sample: str | None) -> Any:
        if file is not None and file.filename:
            data = await file.read(MAX_UPLOAD_BYTES + 1)
            return read_upload(data, file.filename)
        if sample:
            return workbench.sample(sample)
        raise UploadError("choose an image to upload or a sample photo")

    @app.post("/api/predict")
    async def predict(
        model: Annotated[str, Form()],
        file: Annotated[UploadFile | None, File()] = None,
        sample: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        image = await _image(file, sample)
        return {"top5": workbench.predict(image, model)}

    @app.post("/api/explain")
    async def explain(
        model: Annotated[str, Form()],
        methods: Annotated[str, Form()],
        file: Annotated[UploadFile | None, File()] = None,
        sample: Annotated[str | None, Form()] = None,
        layer: Annotated[str | None, Form()] = None,
        target: Annotated[str | None, Form()] = None,
        fidelity: Annotated[int, Form()] = 0,
    ) -> dict[str, Any]:
        image = await _image(file, sample)
        chosen = [m for m in methods.split(",") if m]
        if not chosen:
            raise LiftCamError("choose at least one method")
        if not 0 <= fidelity <= 1000:
            raise LiftCamError("fidelity: the number of Shapley permutations must be between 0 and 1000")
        return workbench.explain(image, model, layer or None, target or None, chosen, fidelity)

    @app.get("/api/download/{key}")
    def download(key: str) -> Response:
        headers = {"Content-Disposition": f'attachment; filename="liftcam-{key[:8]}.zip"'}
        return Response(workbench.download(key), media_type="application/zip", headers=headers)

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model: str = "efficientnet-lite0", device: str = "cpu") -> None:
    """Load the model, print the address and serve until interrupted."""
    import uvicorn

    from ..runs.files import tell

    app = create_app(Workbench(model, device))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", workers=1)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    tell(f"liftcam: serving {model} on http://{shown}:{port} (Ctrl+C to stop)")
    server.run()
