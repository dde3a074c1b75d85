"""Every Z-Image model at WaveSpeed v3 over real HTTP to the emulator: the path and exact body each model gets, the
uploads, the pictures, the mask, one meaning of strength, and bad input refused before anything is sent."""

from __future__ import annotations

import io
import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from tests.comfy_stubs import call_node
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.emulator.server import ACCOUNT_PATHS

PROMPT = "a lighthouse on a cliff at dusk"
NEGATIVE = "no text"
LORA_A = {"path": "owner/film-grain", "scale": 0.8}
LORA_B = {"path": "https://example.test/loras/ink.safetensors", "scale": 1.5}
UPLOAD = "POST /api/v3/media/upload/binary"


def reference(width: int = 320, height: int = 240, batch: int = 1) -> torch.Tensor:
    """A picture with structure (two ramps and a per-picture shade), so that following it shows in the pixels."""
    ys = torch.linspace(0, 1, height).view(1, height, 1, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width, 1)
    shade = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) / max(batch, 1)
    return torch.cat([xs.expand(batch, height, width, 1), ys.expand(batch, height, width, 1),
                      shade.expand(batch, height, width, 1)], dim=-1).contiguous()


def painted(width: int = 320, height: int = 240, box: tuple[int, int, int, int] = (40, 30, 200, 150)) -> torch.Tensor:
    """A MASK [1, H, W] that is 1 inside ``box`` (left, top, right, bottom), as the mask editor paints it."""
    mask = torch.zeros(1, height, width)
    left, top, right, bottom = box
    mask[:, top:bottom, left:right] = 1.0
    return mask


def lora_chain(nodes: ModuleType, *items: dict[str, Any]) -> Any:
    chain = None
    for item in items:
        (chain,) = call_node(nodes.ZImageLoRA().chain(path=item["path"], scale=item["scale"], loras=chain))
    return chain


def run(nodes: ModuleType, name: str, **inputs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    image, info = call_node(getattr(cls(), cls.FUNCTION)(**inputs, unique_id="5"))
    return image, json.loads(info)


def generate(model: str, **extra: Any) -> dict[str, Any]:
    return dict(prompt=PROMPT, negative_prompt=NEGATIVE, model=model, api="v3", guidance_scale=7.5, width=256,
                height=256, seed=7, count=1, **extra)


def edit(model: str, **extra: Any) -> dict[str, Any]:
    return dict(image=reference(), prompt=PROMPT, negative_prompt=NEGATIVE, model=model, api="v3", strength=0.7,
                guidance_scale=6.5, seed=3, count=1, **extra)


COMMON = {"seed": 7, "output_format": "png", "enable_sync_mode": False, "enable_base64_output": True}
EDIT_COMMON = {**COMMON, "seed": 3, "size": "336*256", "image": "<upload 1>"}

# Every model of the table: the node and its inputs, then the path and the exact body that must go out.
MODELS: dict[str, tuple[str, Any, str, dict[str, Any]]] = {
    "turbo": ("ZImageGenerate", lambda n: generate("Z-Image-Turbo"), "wavespeed-ai/z-image/turbo",
              {**COMMON, "prompt": PROMPT, "size": "256*256"}),
    "base": ("ZImageGenerate", lambda n: generate("Z-Image-Base"), "wavespeed-ai/z-image/base",
             {**COMMON, "prompt": PROMPT, "size": "256*256", "negative_prompt": NEGATIVE}),
    "turbo-lora": ("ZImageGenerate", lambda n: generate("Z-Image-Turbo", loras=lora_chain(n, LORA_A, LORA_B)),
                   "wavespeed-ai/z-image/turbo-lora",
                   {**COMMON, "prompt": PROMPT, "size": "256*256", "loras": [LORA_A, LORA_B]}),
    "base-lora": ("ZImageGenerate", lambda n: generate("Z-Image-Base", loras=lora_chain(n, LORA_A)),
                  "wavespeed-ai/z-image/base-lora",
                  {**COMMON, "prompt": PROMPT, "size": "256*256", "negative_prompt": NEGATIVE, "loras": [LORA_A]}),
    "base edit": ("ZImageEdit", lambda n: edit("Z-Image-Base"), "wavespeed-ai/z-image/base",
                  {**EDIT_COMMON, "prompt": PROMPT, "negative_prompt": NEGATIVE, "strength": 0.3}),
    "base-lora edit": ("ZImageEdit", lambda n: edit("Z-Image-Base", loras=lora_chain(n, LORA_B)),
                       "wavespeed-ai/z-image/base-lora",
                       {**EDIT_COMMON, "prompt": PROMPT, "negative_prompt": NEGATIVE, "strength": 0.3,
                        "loras": [LORA_B]}),
    "image-to-image": ("ZImageEdit", lambda n: edit("Z-Image-Turbo"), "wavespeed-ai/z-image-turbo/image-to-image",
                       {**EDIT_COMMON, "prompt": PROMPT, "strength": 0.3}),
    "image-to-image-lora": ("ZImageEdit", lambda n: edit("Z-Image-Turbo", loras=lora_chain(n, LORA_A, LORA_B)),
                            "wavespeed-ai/z-image-turbo/image-to-image-lora",
                            {**EDIT_COMMON, "prompt": PROMPT, "strength": 0.3, "loras": [LORA_A, LORA_B]}),
    "turbo-inpaint": ("ZImageInpaint", lambda n: dict(image=reference(), mask=painted(), prompt=PROMPT, seed=3,
                                                      count=1),
                      "wavespeed-ai/z-image/turbo-inpaint",
                      {**EDIT_COMMON, "prompt": PROMPT, "mask_image": "<upload 2>"}),
    "controlnet": ("ZImageControlNet", lambda n: dict(control_image=reference(), mode="canny", strength=0.8,
                                                      prompt=PROMPT, width=0, height=0, seed=3, count=1),
                   "wavespeed-ai/z-image-turbo/controlnet",
                   {**EDIT_COMMON, "prompt": PROMPT, "mode": "canny", "strength": 0.8}),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_gets_its_path_exactly_its_fields_its_uploads_and_answers_pictures(
        model: str, nodes: ModuleType, emu: Emulator) -> None:
    name, inputs, path, expected = MODELS[model]
    image, info = run(nodes, name, **inputs(nodes))
    submits = [r for r in emu.requests if r.method == "POST" and "/media/" not in r.path
            and r.path not in ACCOUNT_PATHS]
    assert [r.path for r in submits] == [f"/api/v3/{path}"]
    uploads = emu.requests_to(UPLOAD)
    body = dict(submits[0].json)
    sent = [upload.files["file"][1] for upload in uploads]
    for name, value in body.items():  # an uploaded URL stands for the upload whose bytes it serves
        stored = emu._file_from_url(value) if isinstance(value, str) and value.startswith(emu.url) else None
        if stored is not None:
            body[name] = f"<upload {sent.index(stored.data) + 1}>"
    assert body == expected  # exactly these fields: nothing the model page does not list
    assert submits[0].status == 200
    for upload in uploads:  # every upload is a PNG in the field "file", at the reference's size (320x240)
        filename, data, content_type = upload.files["file"]
        assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (320, 240)
    assert len(uploads) == sum(1 for v in expected.values() if str(v).startswith("<upload"))
    # The picture: the emulator answers at a quarter of the size asked for.
    width, height = (int(side) for side in expected["size"].split("*"))
    assert tuple(image.shape) == (1, height // 4, width // 4, 3)
    assert float(image.std()) > 0.02  # a picture, not a flat fill
    assert info["model_id"] == path and info["api"] == "v3"


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].numpy().astype(np.float64)


def _resized(tensor: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    picture = Image.fromarray((tensor[0].numpy() * 255).round().astype(np.uint8))
    return np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.float64) / 255.0


def test_strength_means_the_same_on_v1_images_and_v3_judged_on_the_pixels(nodes: ModuleType, emu: Emulator) -> None:
    ref = reference(320, 240)
    distance: dict[tuple[str, float], float] = {}
    for api in ("v1/images", "v3"):
        for strength in (0.2, 0.85):
            image, info = run(nodes, "ZImageEdit", **dict(edit("Z-Image-Base"), image=ref, api=api,
                                                          strength=strength, negative_prompt=""))
            out = _pixels(image)
            top = out[: out.shape[0] // 2]  # the upper half: the caption panel sits at the bottom
            expected = _resized(ref, (out.shape[1], out.shape[0]))[: out.shape[0] // 2]
            distance[api, strength] = float(np.abs(top - expected).mean())
            assert info["strength"] == strength
            assert info["strength_sent"] == (strength if api == "v1/images" else round(1 - strength, 6))
    sent = [r.json["strength"] for r in emu.requests_to("POST /api/v3/wavespeed-ai/z-image/base")]
    assert sent == [0.8, 0.15]  # v3 takes the denoise
    for api in ("v1/images", "v3"):  # higher follows the reference more, on both apis
        assert distance[api, 0.85] < distance[api, 0.2] / 2, distance
    for strength in (0.2, 0.85):  # and the same value lands as close to the reference on both
        assert distance["v1/images", strength] == pytest.approx(distance["v3", strength], abs=0.02), distance


@pytest.mark.parametrize("size", [(320, 240), (1400, 1050)])
def test_the_uploaded_mask_is_white_exactly_where_the_mask_is_1_at_the_uploaded_pictures_size(
        size: tuple[int, int], nodes: ModuleType, emu: Emulator) -> None:
    width, height = size
    box = (width // 8, height // 8, width // 2, height // 2)
    mask = painted(width, height, box)
    image, info = run(nodes, "ZImageInpaint", image=reference(width, height), mask=mask, prompt=PROMPT, seed=1,
                      count=1)
    picture_upload, mask_upload = (r.files["file"] for r in emu.requests_to(UPLOAD))
    uploaded = Image.open(io.BytesIO(picture_upload[1]))
    sent_mask = Image.open(io.BytesIO(mask_upload[1]))
    assert max(uploaded.size) == min(max(size), 1024)
    assert sent_mask.size == uploaded.size and sent_mask.mode == "L"
    values = np.asarray(sent_mask)
    assert set(np.unique(values)) <= {0, 255}
    expected = np.asarray(Image.fromarray((mask[0].numpy() * 255).astype(np.uint8)).resize(
        uploaded.size, Image.Resampling.NEAREST)) == 255
    if size == uploaded.size:
        assert np.array_equal(values == 255, mask[0].numpy() == 1.0)  # pixel for pixel
    else:  # scaled with the picture: the same area, up to a pixel at the edges
        assert np.mean((values == 255) != expected) < 0.01
    # The picture follows the mask: kept outside it (the reference), new inside it.
    out = _pixels(image)
    h, w = out.shape[:2]
    ref = _resized(reference(width, height), (w, h))
    keep = out[int(h * 0.6): int(h * 0.8), int(w * 0.6):]  # right of and below the painted box, above the corner
    new = out[int(h * 0.15): int(h * 0.45), int(w * 0.15): int(w * 0.45)]
    assert np.abs(keep - ref[int(h * 0.6): int(h * 0.8), int(w * 0.6):]).mean() < 0.03
    assert np.abs(new - ref[int(h * 0.15): int(h * 0.45), int(w * 0.15): int(w * 0.45)]).mean() > 0.1
    assert info["masks_scaled"] == 0
    # The kept part is the reference, yet the answer still carries the emulator's mark in its corner (cards under
    # 160 px, as the small one here is drawn, carry only the metadata note).
    corner = np.abs(out[: h // 8, -w // 4:] - ref[: h // 8, -w // 4:]).max()
    assert corner > 0.5 if min(h, w) >= 160 else corner < 0.01, (h, w, corner)


def test_inpaint_broadcasts_one_mask_over_a_batch_and_scales_a_mask_of_another_size(nodes: ModuleType,
                                                                                    emu: Emulator) -> None:
    image, info = run(nodes, "ZImageInpaint", image=reference(320, 240, batch=2), mask=painted(160, 120,
                      (20, 15, 100, 75)), prompt=PROMPT, seed=1, count=1)
    assert image.shape[0] == 2 and info["masks_scaled"] == 2
    masks = [Image.open(io.BytesIO(r.files["file"][1])) for r in emu.requests_to(UPLOAD)[1::2]]
    assert [m.size for m in masks] == [(320, 240)] * 2
    text = nodes._Node.context.hooks.all_text()
    assert "2 mask(s) had another size than their picture and were scaled to it." in text
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/z-image/turbo-inpaint")) == 2


def test_the_status_line_shows_the_models_price_and_what_was_not_sent(nodes: ModuleType, emu: Emulator) -> None:
    run(nodes, "ZImageEdit", **dict(edit("Z-Image-Turbo"), count=2))
    text = nodes._Node.context.hooks.all_text()
    assert text.startswith("starting: 2 picture(s) at $0.005 each (about $0.01) · "
                           "wavespeed-ai/z-image-turbo/image-to-image")
    assert ("wavespeed-ai/z-image-turbo/image-to-image takes no negative prompt: the negative prompt was not "
            "sent.") in text
    assert "CFG was not sent" in text
    nodes._Node.context.hooks.texts.clear()
    run(nodes, "ZImageInpaint", image=reference(), mask=painted(), prompt=PROMPT, seed=1, count=3)
    assert nodes._Node.context.hooks.texts[0][0].startswith(
        "starting: 3 picture(s) at $0.02 each (about $0.06) · wavespeed-ai/z-image/turbo-inpaint")
    nodes._Node.context.hooks.texts.clear()
    run(nodes, "ZImageGenerate", **generate("Z-Image-Turbo", loras=lora_chain(nodes, LORA_A)))
    assert nodes._Node.context.hooks.texts[0][0].startswith(
        "starting: 1 picture(s) at about $0.01 (not published) each (about $0.01) · wavespeed-ai/z-image/turbo-lora")


BAD: dict[str, tuple[str, Any, str]] = {
    "four LoRAs": ("ZImageGenerate", lambda n: generate("Z-Image-Turbo", loras=tuple(
        n.Lora(f"owner/style-{i}", 1.0) for i in range(4))), "4 LoRAs are chained; WaveSpeed takes at most 3"),
    "empty LoRA path": ("ZImageGenerate", lambda n: generate("Z-Image-Turbo", loras=(("  ", 1.0),)),
                        "The LoRA path is empty"),
    "malformed LoRA path": ("ZImageEdit", lambda n: edit("Z-Image-Turbo", loras=(("http://x.test/a.bin", 1.0),)),
                            "is neither a Hugging Face repo id (owner/name) nor an https URL"),
    "LoRA scale over 4": ("ZImageGenerate", lambda n: generate("Z-Image-Base", loras=(("owner/name", 4.5),)),
                          "The LoRA scale 4.5 is outside 0-4"),
    "LoRAs on v1/images": ("ZImageGenerate", lambda n: dict(generate("Z-Image-Base", loras=(("owner/name", 1),)),
                                                            api="v1/images"),
                           "LoRAs need the v3 api: /v1/images has no LoRA field"),
    "LoRA edit on v1/images": ("ZImageEdit", lambda n: dict(edit("Z-Image-Turbo", loras=(("owner/name", 1),)),
                                                            api="v1/images"), "LoRAs need the v3 api"),
    "image-to-image strength over 1": ("ZImageEdit", lambda n: dict(edit("Z-Image-Turbo"), strength=1.2),
                                       "The strength 1.2 is outside 0-1"),
    "base on v3 at 2048": ("ZImageGenerate", lambda n: dict(generate("Z-Image-Base"), width=2048),
                           "The width 2048 is outside 256-1536 pixels, the range of WaveSpeed v3"),
    "turbo with a negative seed": ("ZImageGenerate", lambda n: dict(generate("Z-Image-Turbo"), seed=-5),
                                   "The seed -5 is outside 0-2147483647"),
    "masks that cannot broadcast": ("ZImageInpaint", lambda n: dict(image=reference(batch=2), mask=painted().repeat(
        3, 1, 1), prompt=PROMPT, seed=1, count=1), "The image batch has 2 pictures and the mask batch 3 masks"),
    "a mask that is not a MASK": ("ZImageInpaint", lambda n: dict(image=reference(), mask=reference(), prompt=PROMPT,
                                                                  seed=1, count=1), "expected a MASK"),
    "an empty mask": ("ZImageInpaint", lambda n: dict(image=reference(), mask=torch.zeros(1, 240, 320),
                                                      prompt=PROMPT, seed=1, count=1), "The mask is empty"),
    "empty inpaint prompt": ("ZImageInpaint", lambda n: dict(image=reference(), mask=painted(), prompt=" ", seed=1,
                                                             count=1), "The prompt is empty"),
    "unknown control mode": ("ZImageControlNet", lambda n: dict(control_image=reference(), mode="edges",
                                                                strength=1.0, prompt=PROMPT, width=0, height=0,
                                                                seed=1, count=1), "The mode 'edges' is not one of"),
    "control strength over 1": ("ZImageControlNet", lambda n: dict(control_image=reference(), mode="depth",
                                                                   strength=1.5, prompt=PROMPT, width=0, height=0,
                                                                   seed=1, count=1), "The strength 1.5 is outside"),
    "control size over 1536": ("ZImageControlNet", lambda n: dict(control_image=reference(), mode="depth",
                                                                  strength=1.0, prompt=PROMPT, width=2048,
                                                                  height=1024, seed=1, count=1), "width 2048"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_with_one_sentence_before_anything_is_sent_or_uploaded(
        case: str, nodes: ModuleType, emu: Emulator) -> None:
    name, inputs, message = BAD[case]
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    with pytest.raises(nodes.ValidationError) as caught:
        call_node(getattr(cls(), cls.FUNCTION)(**inputs(nodes), unique_id="5"))
    assert message in str(caught.value)
    assert emu.requests == []


def test_the_lora_node_refuses_a_fourth_lora_and_a_bad_one_at_once(nodes: ModuleType) -> None:
    chain = lora_chain(nodes, LORA_A, LORA_B, {"path": "owner/third", "scale": 0.0})
    assert [lora.as_json() for lora in chain] == [LORA_A, LORA_B, {"path": "owner/third", "scale": 0.0}]
    with pytest.raises(nodes.ValidationError, match="4 LoRAs are chained"):
        call_node(nodes.ZImageLoRA().chain(path="owner/fourth", scale=1.0, loras=chain))
    with pytest.raises(nodes.ValidationError, match="The LoRA scale -1 is outside 0-4"):
        call_node(nodes.ZImageLoRA().chain(path="owner/name", scale=-1))


# -- the emulator is as strict as the model pages --------------------------------------------------------------------


@pytest.fixture
def http(emu: Emulator) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {DEMO_KEY}"
    return session


def _upload(http: requests.Session, emu: Emulator, picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    answer = http.post(f"{emu.url}/api/v3/media/upload/binary", files={"file": ("p.png", buffer.getvalue(),
                                                                                 "image/png")}, timeout=10)
    return str(answer.json()["data"]["download_url"])


STRICT: dict[str, tuple[str, dict[str, Any], str]] = {
    "negative prompt at turbo": ("z-image/turbo", {"negative_prompt": "x"},
                                 "unsupported parameter for z-image/turbo: negative_prompt"),
    "guidance at base": ("z-image/base", {"guidance_scale": 7}, "unsupported parameter for z-image/base: guidance"),
    "image at turbo-lora": ("z-image/turbo-lora", {"image": "<picture>"},
                            "unsupported parameter for z-image/turbo-lora: image"),
    "no image at image-to-image": ("z-image-turbo/image-to-image", {}, "image is required"),
    "no mask at inpaint": ("z-image/turbo-inpaint", {"image": "<picture>"}, "mask_image is required"),
    "strength at inpaint": ("z-image/turbo-inpaint", {"image": "<picture>", "mask_image": "<mask>", "strength": 0.5},
                            "unsupported parameter for z-image/turbo-inpaint: strength"),
    "a mask of another size": ("z-image/turbo-inpaint", {"image": "<picture>", "mask_image": "<small mask>"},
                               "the mask must have the picture's size"),
    "four loras": ("z-image/base-lora", {"loras": [LORA_A] * 4}, "at most 3"),
    "a lora scale of 5": ("z-image/turbo-lora", {"loras": [{"path": "a/b", "scale": 5}]}, "between 0 and 4"),
    "a lora path that is neither": ("z-image/turbo-lora", {"loras": [{"path": "ftp://x/y", "scale": 1}]},
                                    "neither a Hugging Face repo id"),
    "an unknown mode": ("z-image-turbo/controlnet", {"image": "<picture>", "mode": "edges"}, "mode must be one of"),
    "strength over 1": ("z-image/base", {"image": "<picture>", "strength": 1.2}, "strength must be a number"),
    "seed past the largest": ("z-image/base", {"seed": 2147483648}, "seed must be an integer"),
    "an unknown model": ("z-image/turbo-upscale", {}, "No model"),
}


@pytest.mark.parametrize("case", list(STRICT))
def test_the_emulator_refuses_what_a_model_page_does_not_list(case: str, emu: Emulator,
                                                             http: requests.Session) -> None:
    path, extra, message = STRICT[case]
    urls = {"<picture>": _upload(http, emu, Image.new("RGB", (64, 48), (10, 200, 30))),
            "<mask>": _upload(http, emu, Image.new("L", (64, 48), 255)),
            "<small mask>": _upload(http, emu, Image.new("L", (32, 24), 255))}
    body = {"prompt": PROMPT, "size": "256*256", "seed": 1, **{k: urls.get(v, v) if isinstance(v, str) else v
                                                                 for k, v in extra.items()}}
    answer = http.post(f"{emu.url}/api/v3/wavespeed-ai/{path}", json=body, timeout=10)
    assert answer.status_code == (404 if case == "an unknown model" else 400), answer.text
    assert message in answer.json()["message"]


def test_the_emulator_controlnet_follows_its_control_more_with_a_higher_strength(emu: Emulator,
                                                                               http: requests.Session) -> None:
    control = Image.fromarray((_resized(reference(256, 256), (256, 256)) * 255).astype(np.uint8))
    url = _upload(http, emu, control)
    distance = []
    for strength in (0.1, 1.0):
        answer = http.post(f"{emu.url}/api/v3/wavespeed-ai/z-image-turbo/controlnet", json={
            "prompt": PROMPT, "image": url, "mode": "none", "strength": strength, "size": "256*256", "seed": 4,
            "enable_sync_mode": True, "output_format": "png"}, timeout=10)
        assert answer.status_code == 200, answer.text
        out = np.asarray(Image.open(io.BytesIO(emu.served_images[-1])).convert("L"), dtype=np.float64) / 255
        grey = np.asarray(control.convert("L").resize(out.shape[::-1]), dtype=np.float64) / 255
        half = out.shape[0] // 2
        distance.append(float(np.abs(out[:half] - grey[:half]).mean()))
    assert distance[1] < distance[0] * 0.6, distance


def test_the_new_nodes_declare_their_inputs_in_order(nodes: ModuleType) -> None:
    def inputs(name: str) -> tuple[list[str], list[str]]:
        spec = nodes.NODE_CLASS_MAPPINGS[name].INPUT_TYPES()
        return list(spec["required"]), list(spec.get("optional", {}))

    assert inputs("ZImageLoRA") == (["path", "scale"], ["loras"])
    assert nodes.ZImageLoRA.RETURN_TYPES == ("ZIMAGE_LORAS",) and nodes.ZImageLoRA.RETURN_NAMES == ("loras",)
    assert inputs("ZImageInpaint") == (["image", "mask", "prompt", "seed", "count"], ["timeout"])
    assert inputs("ZImageControlNet") == (["control_image", "mode", "strength", "prompt", "width", "height", "seed",
                                           "count"], ["timeout"])
    for name in ("ZImageGenerate", "ZImageEdit"):  # new inputs go last, optional: saved workflows load unchanged
        assert inputs(name)[1][-1] == "loras"
    control = nodes.ZImageControlNet.INPUT_TYPES()["required"]
    assert control["mode"][0] == ["depth", "canny", "pose", "none"] and control["mode"][1]["default"] == "depth"
    assert "local preprocessor" in control["mode"][1]["tooltip"] and "Canny" in control["mode"][1]["tooltip"]
    assert control["strength"][1]["default"] == 1.0
    strength = nodes.ZImageEdit.INPUT_TYPES()["required"]["strength"][1]["tooltip"]
    assert "0.7+ a near copy" in strength and "1 - strength" in strength
