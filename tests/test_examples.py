"""The example notebook runs top to bottom on the offline model (nbclient), so it never goes stale."""

from __future__ import annotations

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_notebook_runs_and_shows_its_pictures(tmp_path: Path) -> None:
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # the Explanation's own display and liftcam.show's grid
    text = "".join(o.get("text", "") for o in outputs)
    assert "Shapley r per image" in text and "average_drop" in text


def test_show_draws_inputs_and_overlays_and_refuses_mismatched_images() -> None:
    import torch
    from torch import nn

    import liftcam

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    x = torch.rand(2, 3, 16, 16)
    explained = liftcam.explain(model.eval(), x, "1", ["lift-cam", "grad-cam"])
    figure = liftcam.show(explained, class_names=["a", "b", "c"])  # the inputs kept in the explanations
    assert len(figure.axes) == 2 * 3 and figure.axes[0].get_title() in ("a", "b", "c")
    assert [ax.get_title() for ax in figure.axes[1:3]] == ["lift-cam", "grad-cam"]
    assert explained["lift-cam"]._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="differ in size"):
        liftcam.show(explained, torch.rand(2, 3, 8, 8))
