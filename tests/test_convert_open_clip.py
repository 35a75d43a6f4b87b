"""open_clip ViT CLIP -> SILC, checked against open_clip's own forward on random models.

open_clip imports torchvision at package import, for its image transforms and a frozen-BatchNorm helper;
neither is used by the model forward. torchvision is not installed here (it does not work beside the CPU
torch build), so those imports are served by inert stand-ins while open_clip is imported; every op of the
forward compared below is open_clip's own code.
"""

import importlib
import sys
import types

import pytest
import torch

from silc_hf.convert.open_clip import from_open_clip


class _Inert:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return _Inert


class _InertType(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _InertClass


class _InertClass(_Inert, metaclass=_InertType):
    pass


class _InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _InertClass


def _import_open_clip():
    try:  # a working torchvision: import open_clip as is
        importlib.import_module("torchvision")
        return importlib.import_module("open_clip")
    except ImportError:
        pass
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.ops",
        "torchvision.ops.misc",
    ]
    modules = {name: _InertModule(name) for name in names}
    for name, module in modules.items():
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    try:
        import open_clip
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return open_clip


open_clip = _import_open_clip()


def _random_open_clip(quick_gelu: bool, pool_type: str = "argmax"):
    config = dict(
        embed_dim=24,
        vision_cfg=dict(image_size=32, layers=2, width=64, head_width=16, patch_size=8),
        text_cfg=dict(context_length=16, vocab_size=99, width=32, heads=4, layers=2, pool_type=pool_type, eos_id=97),
        quick_gelu=quick_gelu,
    )
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**config).eval()
    with torch.no_grad():  # open_clip initialises norms to 1 / 0: perturb everything so every key matters
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model, config


@pytest.mark.parametrize("quick_gelu, pool_type", [(True, "argmax"), (False, "argmax"), (False, "eos")])
def test_converted_open_clip_reproduces_open_clip(quick_gelu, pool_type):
    source, config = _random_open_clip(quick_gelu, pool_type)
    converted, report = from_open_clip(source.state_dict(), config, return_report=True)
    converted.eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 32, 32, generator=generator)
    texts = torch.randint(1, 97, (4, 16), generator=generator)
    texts[:, 9] = 98 if pool_type == "argmax" else 97  # the end token: highest id (OpenAI rule) or eos_id
    texts[:, 10:] = 0
    with torch.no_grad():
        image_features, text_features, scale = source(images, texts)[:3]
        out = converted(input_ids=texts, pixel_values=images)
        torch.testing.assert_close(
            converted.get_image_features(images).image_embeds, source.encode_image(images), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            converted.get_text_features(texts).text_embeds, source.encode_text(texts), rtol=1e-5, atol=1e-5
        )
    torch.testing.assert_close(out.image_embeds, image_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits_per_image, image_features @ text_features.t() * scale, rtol=1e-5, atol=1e-5)
    assert len(report.consumed) == len(source.state_dict())


def test_checkpoint_wrappers_and_errors():
    source, config = _random_open_clip(True)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    converted = from_open_clip(wrapped, config)
    assert torch.equal(converted.vision_model.projection.weight, source.visual.proj.t())
    with pytest.raises(
        ValueError, match="open_clip vision_cfg.attentional_pool=True builds a tower SILC does not reproduce"
    ):
        from_open_clip(
            source.state_dict(), {**config, "vision_cfg": {**config["vision_cfg"], "attentional_pool": True}}
        )
    broken = dict(source.state_dict())
    broken.pop("ln_final.weight")
    with pytest.raises(KeyError, match="ln_final.weight"):
        from_open_clip(broken, config)


def test_command_line_writes_a_folder_that_auto_classes_load(tmp_path):
    import json

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    from silc_hf.convert.__main__ import main

    source, config = _random_open_clip(False, "eos")
    torch.save(source.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    (tmp_path / "ViT-tiny.json").write_text(json.dumps(config))
    main(
        [
            "open-clip",
            str(tmp_path / "open_clip_pytorch_model.bin"),
            str(tmp_path / "ViT-tiny.json"),
            str(tmp_path / "silc"),
        ]
    )
    model = AutoModel.from_pretrained(tmp_path / "silc").eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_image_features(images).image_embeds, source.encode_image(images), rtol=1e-5, atol=1e-5
        )
    # open_clip's preprocessing: shortest side to 32, center crop, OpenAI mean/std
    processor = AutoImageProcessor.from_pretrained(tmp_path / "silc")
    image = Image.new("RGB", (64, 40), (255, 0, 0))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(
        pixels[0, :, 16, 16],
        torch.tensor([(1 - 0.48145466) / 0.26862954, -0.4578275 / 0.26130258, -0.40821073 / 0.27577711]),
    )
