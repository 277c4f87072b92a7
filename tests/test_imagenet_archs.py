"""resnet and densenet: torchvision's shapes and parameter names, and ImageNet weights loaded from a file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emostream.models.arch import build_model, count_parameters
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig
from emostream.models.modelfile import ModelSpec, load_classifier, save_checkpoint

# torchvision.models.<name>().state_dict() parameter counts (ImageNet 1000-class head removed):
# the published totals 11,689,512 / 21,797,672 / 25,557,032 / 25,028,904 / 7,978,856 / 28,681,000
# less fc (512 or 2048 x 1000 + 1000) or classifier (1024 or 2208 x 1000 + 1000).
TORCHVISION_BACKBONE_PARAMS = {
    ("resnet", "resnet18"): 11_176_512,
    ("resnet", "resnet34"): 21_284_672,
    ("resnet", "resnet50"): 23_508_032,
    ("resnet", "resnext50_32x4d"): 22_979_904,
    ("densenet", "densenet121"): 6_953_856,
    ("densenet", "densenet161"): 26_472_000,
}
# a few of torchvision's own key names (resnet50, densenet121)
TORCHVISION_KEYS = {
    "resnet": ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight",
               "layer4.2.bn3.num_batches_tracked"],
    "densenet": ["features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
                 "features.denseblock4.denselayer16.conv2.weight", "features.transition3.conv.weight",
                 "features.norm5.running_mean"],
}
TINY = {
    "resnet": {"variant": "resnet18", "layers": [1, 1, 1, 1], "base_channels": 8},
    "densenet": {"block_config": [1, 2, 1, 1], "growth_rate": 4, "num_init_features": 8},
}
HEAD = {"resnet": "fc", "densenet": "classifier"}


def quiet_build(cfg: ModelConfig) -> nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        return build_model(cfg)


@pytest.mark.parametrize(("arch", "variant"), list(TORCHVISION_BACKBONE_PARAMS))
def test_shapes_are_torchvisions(arch: str, variant: str) -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig(arch, 5, 128, {"variant": variant}), load_weights=False)
    assert count_parameters(model.backbone) == TORCHVISION_BACKBONE_PARAMS[arch, variant]
    assert model.head.in_features == {"resnet18": 512, "resnet34": 512, "densenet121": 1024,
                                      "densenet161": 2208}.get(variant, 2048)
    if variant in ("resnet50", "densenet121"):
        assert set(TORCHVISION_KEYS[arch]) <= set(model.backbone.state_dict())


def imagenet_file(path: Path, arch: str, seed: int, old_densenet_names: bool = False) -> dict[str, torch.Tensor]:
    """A torchvision-style file: the backbone's tensors (random), plus a 1000-class head; returns the tensors."""
    torch.manual_seed(seed)
    source = quiet_build(ModelConfig(arch, 3, 64, TINY[arch])).backbone
    with torch.no_grad():
        for name, tensor in source.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor).abs() + 0.1 if "running_var" in name else torch.randn_like(tensor))
    state = dict(source.state_dict())
    saved = dict(state)
    saved[f"{HEAD[arch]}.weight"] = torch.randn(1000, source.embedding_dim)
    saved[f"{HEAD[arch]}.bias"] = torch.randn(1000)
    if old_densenet_names:  # the published densenet files say norm.1 / conv.2 (torchvision renames on load)
        # and, saved before PyTorch 0.4.1, hold no BatchNorm counters
        saved = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in saved.items()
                 if not k.endswith("num_batches_tracked")}
        assert any(".norm.1." in k for k in saved)
    torch.save(saved, path)
    return state


@pytest.mark.parametrize("arch", ["resnet", "densenet"])
@pytest.mark.parametrize("in_channels", [3, 1])
def test_imagenet_weights_load_into_the_backbone(tmp_path: Path, arch: str, in_channels: int) -> None:
    path = tmp_path / f"{arch}.pth"
    state = imagenet_file(path, arch, seed=4, old_densenet_names=arch == "densenet")
    settings = {**TINY[arch], "imagenet_weights": str(path), "in_channels": in_channels}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained" warning when weights are given
        model = build_model(ModelConfig(arch, 3, 64, settings))
    stem = "conv1.weight" if arch == "resnet" else "features.conv0.weight"
    for key, value in state.items():
        expected = value.sum(dim=1, keepdim=True) if key == stem and in_channels == 1 else value
        assert torch.equal(model.backbone.state_dict()[key], expected), key
    assert model.head.out_features == 3  # our classes, not ImageNet's 1000


def test_one_channel_stem_sees_a_grey_image_as_the_rgb_stem_does(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    imagenet_file(path, "resnet", seed=2)
    rgb, grey = (
        build_model(ModelConfig("resnet", 3, 64, {**TINY["resnet"], "imagenet_weights": str(path), "in_channels": c}))
        .eval() for c in (3, 1)
    )
    grey.image.load_state_dict(rgb.image.state_dict())
    x = torch.randn(2, 64, 100)
    with torch.no_grad():
        torch.testing.assert_close(grey.backbone(grey.image(x)), rgb.backbone(rgb.image(x)), rtol=1e-4, atol=1e-4)


def test_wrong_or_missing_weights_are_named(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    imagenet_file(path, "resnet", seed=1)
    with pytest.raises(ValueError, match=r"do not fit this resnet50 backbone.*resnet50-0676ba61\.pth"):
        build_model(ModelConfig("resnet", 3, 64, {**TINY["resnet"], "variant": "resnet50",
                                                  "imagenet_weights": str(path)}))
    with pytest.raises(FileNotFoundError, match=r"densenet161-8d451a50\.pth"):
        build_model(ModelConfig("densenet", 3, 64, {"variant": "densenet161",
                                                    "imagenet_weights": str(tmp_path / "none.pth")}))
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
        build_model(ModelConfig("resnet", 3, 64, {**TINY["resnet"], "imagenet_weights": str(tmp_path / "junk.pth")}))
    with pytest.warns(UserWarning, match=r"UNTRAINED.*resnet18-f37072fd\.pth.*imagenet_weights"):
        build_model(ModelConfig("resnet", 3, 64, TINY["resnet"]))
    with pytest.raises(ValueError, match="unknown resnet variant"):
        build_model(ModelConfig("resnet", 3, 64, {"variant": "resnet7"}))


def test_checkpoint_needs_no_weights_file(tmp_path: Path) -> None:
    """The ImageNet file only initialises training: a checkpoint (and its exports) loads without it."""
    path = tmp_path / "densenet.pth"
    imagenet_file(path, "densenet", seed=3)
    cfg = ModelConfig("densenet", 3, 64, {**TINY["densenet"], "imagenet_weights": str(path)})
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, ModelSpec(FeatureConfig(), cfg, ("a", "b", "c")))
    path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf = load_classifier(ckpt, backend="eager")
    x = torch.randn(2, 64, 120)
    with torch.no_grad():
        np.testing.assert_allclose(clf.logits(x), model(x).numpy(), atol=1e-5)
