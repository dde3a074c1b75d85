"""The example workflows: every UI file and its API twin is checked against the nodes, then the API twin is run."""

from __future__ import annotations

import io
import json
import math
from types import ModuleType
from typing import Any

import numpy
import pytest
import torch
from PIL import Image

from tests.comfy_stubs import PACK_DIR, call_node, patch_nodes
from zimage_api.emulator import Emulator

WORKFLOWS = PACK_DIR / "workflows"
NAMES = ["01_generate_postprocess", "02_edit_loadimage", "03_qingbo_submit_poll", "04_generate_then_edit",
         "05_lora_chain", "06_inpaint_loadimage_mask", "07_controlnet_canny"]

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
# The ComfyUI core nodes the workflows may use, as ComfyUI 0.3.64 declares them (inputs in order, outputs).
CORE_NODES: dict[str, dict[str, Any]] = {
    "LoadImage": {"required": {"image": (["example.png"], {"image_upload": True})}, "outputs": ["IMAGE", "MASK"]},
    "SaveImage": {"required": {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                  "outputs": []},
    "PreviewImage": {"required": {"images": ("IMAGE", {})}, "outputs": []},
    "Canny": {"required": {"image": ("IMAGE", {}),
                           "low_threshold": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}),
                           "high_threshold": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01})},
              "outputs": ["IMAGE"]},
    "ImageScaleBy": {"required": {"image": ("IMAGE", {}), "upscale_method": (UPSCALE_METHODS, {}),
                                  "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})},
                     "outputs": ["IMAGE"]},
    "SolidMask": {"required": {"value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                               "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                               "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1})},
                  "outputs": ["MASK"]},
    "MaskComposite": {"required": {"destination": ("MASK", {}), "source": ("MASK", {}),
                                   "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
                                   "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
                                   "operation": (["multiply", "add", "subtract", "and", "or", "xor"], {})},
                      "outputs": ["MASK"]},
    "ImageSharpen": {"required": {"image": ("IMAGE", {}),
                                  "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                                  "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                                  "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01})},
                     "outputs": ["IMAGE"]},
}
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # canvas notes: in UI files only, never in API prompts
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
OUTPUT_NODES = {"SaveImage", "PreviewImage"}


def node_spec(pack: ModuleType, class_type: str) -> tuple[dict[str, tuple[Any, dict[str, Any]]], list[str]]:
    """(inputs in ComfyUI's order, output types) of a pack node or a core node."""
    if class_type in pack.NODE_CLASS_MAPPINGS:
        cls = pack.NODE_CLASS_MAPPINGS[class_type]
        declared = cls.INPUT_TYPES()
        return {**declared.get("required", {}), **declared.get("optional", {})}, list(cls.RETURN_TYPES)
    assert class_type in CORE_NODES, f"unknown node type {class_type}"
    core = CORE_NODES[class_type]
    return dict(core["required"]), list(core["outputs"])


def is_widget(declaration: tuple[Any, dict[str, Any]]) -> bool:
    return isinstance(declaration[0], list) or declaration[0] in WIDGET_TYPES


# Widgets added at the end of a node after workflows were saved with it. ComfyUI gives a widget missing from a saved
# workflow its default (and so does an API prompt without the input), which keeps the saved workflow's meaning.
ADDED_LATER = {"QingboTaskSubmit": ("seed_zero_means_random",)}


def has_control(name: str, declaration: tuple[Any, dict[str, Any]]) -> bool:
    options = declaration[1]
    return declaration[0] == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed"))


def check_value(where: str, name: str, declaration: tuple[Any, dict[str, Any]], value: Any) -> None:
    kind, options = declaration
    if isinstance(kind, list):
        assert value in kind, f"{where}: {name}={value!r} is not one of {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {name} must be an INT"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), where
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {name} must be a STRING"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {name} must be a BOOLEAN"
    if "min" in options:
        assert options["min"] <= value <= options["max"], f"{where}: {name}={value} outside the widget's range"


def ui_file(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def api_file(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text(encoding="utf-8"))


def test_the_folder_holds_exactly_the_templates_and_their_twins() -> None:
    # ComfyUI lists every top-level *.json of workflows/ as a template, so only UI-format files live there;
    # the API-format twins (for POST /prompt) sit in workflows/api/, which the template list does not read.
    assert sorted(p.name for p in WORKFLOWS.glob("*.json")) == sorted(f"{n}.json" for n in NAMES)
    assert sorted(p.name for p in (WORKFLOWS / "api").glob("*.json")) == sorted(f"{n}.json" for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_valid(pack: ModuleType, name: str) -> None:
    workflow = ui_file(name)
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"])
    links = {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"])
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == max(links)
    orders = sorted(node["order"] for node in nodes.values())
    assert orders == list(range(len(nodes)))

    for node in nodes.values():
        where = f"{name} node {node['id']} ({node['type']})"
        for key in ("pos", "size", "flags", "mode", "properties"):
            assert key in node, f"{where}: no {key}"
        assert len(node["pos"]) == 2 and len(node["size"]) == 2 and node["mode"] == 0
        if node["type"] in FRONTEND_ONLY:
            assert isinstance(node["widgets_values"][0], str) and not node.get("inputs") and not node.get("outputs")
            continue
        inputs, outputs = node_spec(pack, node["type"])
        assert node["properties"].get("Node name for S&R") == node["type"]

        # widgets_values: every widget in declaration order, the seed control value right after the seed.
        values = list(node.get("widgets_values", []))
        for input_name, declaration in inputs.items():
            if not is_widget(declaration):
                continue
            if not values and input_name in ADDED_LATER.get(node["type"], ()):
                continue
            assert values, f"{where}: widgets_values ends before {input_name}"
            check_value(where, input_name, declaration, values.pop(0))
            if has_control(input_name, declaration):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize"), where
            if declaration[1].get("image_upload"):
                assert values.pop(0) == "image", where
        assert values == [], f"{where}: extra widget values {values}"

        # sockets: names and types from the declaration, each link id consistent with the links table
        for slot, socket in enumerate(node.get("inputs", [])):
            declaration = inputs[socket["name"]]
            expected_type = "COMBO" if isinstance(declaration[0], list) else declaration[0]
            assert socket["type"] == expected_type, where
            if is_widget(declaration):
                assert socket.get("widget") == {"name": socket["name"]}, f"{where}: {socket['name']} needs widget"
            if socket.get("link") is not None:
                link = links[socket["link"]]
                assert link[3] == node["id"] and link[4] == slot and link[5] == socket["type"], where
        required_sockets = [n for n, d in inputs.items() if not is_widget(d)
                            and n in pack_required(pack, node["type"])]
        linked = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        assert set(required_sockets) <= linked, f"{where}: unconnected {set(required_sockets) - linked}"
        assert [o["type"] for o in node.get("outputs", [])] == outputs, where
        for slot, output in enumerate(node.get("outputs", [])):
            assert output.get("slot_index", slot) == slot
            for link_id in output.get("links") or []:
                link = links[link_id]
                assert link[1] == node["id"] and link[2] == slot and link[5] == output["type"], where

    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[target]["inputs"][target_slot]["type"] == kind
    assert any(node["type"] in OUTPUT_NODES for node in nodes.values()), "ComfyUI runs nothing without an output"


def pack_required(pack: ModuleType, class_type: str) -> set[str]:
    if class_type in pack.NODE_CLASS_MAPPINGS:
        return set(pack.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()["required"])
    return set(CORE_NODES[class_type]["required"])


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_matches_its_ui_file(pack: ModuleType, name: str) -> None:
    ui, api = ui_file(name), api_file(name)
    nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert set(api) == set(nodes)
    links = {link[0]: link for link in ui["links"]}
    for node_id, entry in api.items():
        node = nodes[node_id]
        assert entry["class_type"] == node["type"]
        inputs, _outputs = node_spec(pack, node["type"])
        assert set(entry["inputs"]) <= set(inputs)
        assert pack_required(pack, node["type"]) <= set(entry["inputs"])
        sockets = {s["name"]: s for s in node.get("inputs", [])}
        values = list(node.get("widgets_values", []))
        for input_name, declaration in inputs.items():
            ui_value = None
            if is_widget(declaration):
                ui_value = values.pop(0) if values or input_name not in ADDED_LATER.get(node["type"], ()) else (
                    declaration[1]["default"])
                if has_control(input_name, declaration) or declaration[1].get("image_upload"):
                    values.pop(0)
            socket = sockets.get(input_name)
            if socket is not None and socket.get("link") is not None:
                link = links[socket["link"]]
                assert entry["inputs"][input_name] == [str(link[1]), link[2]], f"{name} {node_id}.{input_name}"
            elif input_name in entry["inputs"]:
                assert entry["inputs"][input_name] == ui_value, f"{name} {node_id}.{input_name}"
                assert type(entry["inputs"][input_name]) is type(ui_value)


def test_inpaint_template_builds_its_mask_from_core_nodes() -> None:
    # example.png has no painted part, so LoadImage's MASK would be empty: the shipped template repaints a square
    # made by core mask nodes, and its note says how to paint one's own mask instead.
    ui, api = ui_file("06_inpaint_loadimage_mask"), api_file("06_inpaint_loadimage_mask")
    load = next(n for n in ui["nodes"] if n["type"] == "LoadImage")
    assert load["widgets_values"][0] == "example.png" and not load["outputs"][1]["links"]
    mask_source = api[api["2"]["inputs"]["mask"][0]]
    assert mask_source["class_type"] == "MaskComposite" and mask_source["inputs"]["operation"] == "add"
    destination, source = (api[mask_source["inputs"][k][0]] for k in ("destination", "source"))
    assert destination == {**destination, "class_type": "SolidMask",
                           "inputs": {"value": 0.0, "width": 768, "height": 768}}
    assert source["class_type"] == "SolidMask" and source["inputs"]["value"] == 1.0
    (note,) = [n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert "Open in MaskEditor" in note and "MASK output" in note and "mask input" in note


@pytest.mark.parametrize("name", NAMES)
def test_workflows_keep_the_mug_settings(name: str) -> None:
    api = api_file(name)
    text = json.dumps(api)
    assert "api_key" not in text.lower() and "bearer" not in text.lower()
    for entry in api.values():
        inputs = entry["inputs"]
        if entry["class_type"] == "ZImageGenerate":
            assert inputs["guidance_scale"] == 7.5 and (inputs["width"], inputs["height"]) == (1024, 1024)
            assert inputs["negative_prompt"] == ("no text, no watermark, no extra hands, no extra limbs, no logo, "
                                                 "no signature, no border")
            assert inputs["prompt"].startswith("Editorial-style product photo of a ceramic mug")
        if entry["class_type"] == "ZImageEdit" and name == "04_generate_then_edit":
            assert inputs["strength"] == 0.35 and inputs["guidance_scale"] == 6.5


# -- running the API prompts against the emulator ---------------------------------------------------------------------


class QuietHooks:
    """No ComfyUI: no progress bar, no status line, never interrupted."""

    def progress_bar(self, total: int, node_id: str | None) -> None:
        return None

    def send_text(self, text: str, node_id: str | None) -> None:
        pass

    def interrupted(self) -> bool:
        return False

    def interrupt_exception(self) -> type[BaseException]:
        return KeyboardInterrupt

    def raise_interrupt(self) -> None:
        raise KeyboardInterrupt

    def user_directory(self) -> None:
        return None


def example_picture() -> torch.Tensor:
    """What LoadImage gives for example.png: a 768x768 picture (here a gradient)."""
    ramp = torch.linspace(0.0, 1.0, 768)
    return torch.stack([ramp.view(1, -1).expand(768, 768), ramp.view(-1, 1).expand(768, 768),
                        torch.full((768, 768), 0.4)], dim=-1).unsqueeze(0).contiguous()


def core_stand_in(class_type: str, inputs: dict[str, Any], saved: list[tuple[str, torch.Tensor]]) -> tuple[Any, ...]:
    if class_type == "LoadImage":
        assert inputs["image"] == "example.png"
        image = example_picture()
        return image, torch.zeros(image.shape[:3])  # example.png has no alpha: nothing is painted
    if class_type == "SolidMask":
        return (torch.full((1, inputs["height"], inputs["width"]), inputs["value"]),)
    if class_type == "MaskComposite":  # core's "add" of source onto destination at (x, y), clamped to [0, 1]
        assert inputs["operation"] == "add"
        out = inputs["destination"].clone()
        x, y, source = inputs["x"], inputs["y"], inputs["source"]
        height, width = min(source.shape[1], out.shape[1] - y), min(source.shape[2], out.shape[2] - x)
        out[:, y:y + height, x:x + width] += source[:, :height, :width]
        return (out.clamp(0.0, 1.0),)
    if class_type == "Canny":  # a local edge map: the gradient's magnitude, thresholded, as white on black
        grey = inputs["image"].mean(dim=-1)
        dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs()[:, :-1, :]
        dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs()[:, :, :-1]
        edges = torch.nn.functional.pad(((dx + dy) > inputs["low_threshold"] / 100).float(), (0, 1, 0, 1))
        return (edges.unsqueeze(-1).repeat(1, 1, 1, 3),)
    if class_type in ("SaveImage", "PreviewImage"):
        saved.append((class_type, inputs["images"]))
        return ()
    if class_type == "ImageScaleBy":
        image = inputs["image"]
        size = (round(image.shape[1] * inputs["scale_by"]), round(image.shape[2] * inputs["scale_by"]))
        scaled = torch.nn.functional.interpolate(image.movedim(-1, 1), size=size, mode="bilinear")
        return (scaled.movedim(1, -1).clamp(0, 1),)
    if class_type == "ImageSharpen":
        return (inputs["image"],)
    raise AssertionError(f"no stand-in for {class_type}")


def topological(api: dict[str, Any]) -> list[str]:
    order: list[str] = []
    while len(order) < len(api):
        ready = [node_id for node_id, entry in api.items() if node_id not in order and all(
            value[0] in order for value in entry["inputs"].values() if isinstance(value, list))]
        assert ready, "the prompt has a cycle"
        order.append(sorted(ready, key=int)[0])
    return order


@pytest.fixture
def run_env(pack: ModuleType, emu: Emulator, clock: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return patch_nodes(monkeypatch, QuietHooks(), clock)


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs_against_the_emulator(pack: ModuleType, run_env: ModuleType, emu: Emulator,
                                                name: str) -> None:
    api = api_file(name)
    results: dict[str, tuple[Any, ...]] = {}
    saved: list[tuple[str, torch.Tensor]] = []
    for node_id in topological(api):
        entry = api[node_id]
        inputs = {key: results[value[0]][value[1]] if isinstance(value, list) else value
                  for key, value in entry["inputs"].items()}
        cls = pack.NODE_CLASS_MAPPINGS.get(entry["class_type"])
        if cls is None:
            results[node_id] = core_stand_in(entry["class_type"], inputs, saved)
        else:
            results[node_id] = call_node(getattr(cls(), cls.FUNCTION)(**inputs, unique_id=node_id))
            outputs = results[node_id]
            assert len(outputs) == len(cls.RETURN_TYPES)
            if "info" in cls.RETURN_NAMES:
                info = json.loads(outputs[cls.RETURN_NAMES.index("info")])
                assert info["images"] == outputs[0].shape[0]
    assert len(saved) == 1
    _kind, image = saved[0]
    assert image.dtype == torch.float32 and image.ndim == 4 and image.shape[-1] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    expected = {
        "01_generate_postprocess": (1, 1536, 1536, 3),  # 1024x1024, upscaled x1.5
        "02_edit_loadimage": (1, 768, 768, 3),  # the reference's size
        "03_qingbo_submit_poll": (1, 256, 256, 3),  # 1K 1:1, drawn at a quarter by the emulator
        "04_generate_then_edit": (1, 1024, 1024, 3),
        "05_lora_chain": (1, 384, 384, 3),  # v3 at a quarter (256), upscaled x1.5
        "06_inpaint_loadimage_mask": (1, 192, 192, 3),  # the picture's size, at a quarter
        "07_controlnet_canny": (1, 192, 192, 3),  # the control image's size, at a quarter
    }[name]
    assert tuple(image.shape) == expected
    if name == "03_qingbo_submit_poll":
        assert len(emu.requests_to("POST /v1/tasks")) == 1 and "seed" not in emu.requests_to("POST /v1/tasks")[0].json
    if name == "05_lora_chain":
        (submit,) = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/turbo-lora")
        assert submit.json["loras"] == [{"path": "owner/zimage-film-grain", "scale": 0.8},
                                        {"path": "owner/zimage-ink-lines", "scale": 0.6}]
        assert "negative_prompt" not in submit.json
    if name == "06_inpaint_loadimage_mask":
        (submit,) = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/turbo-inpaint")
        assert set(submit.json) >= {"image", "mask_image"} and submit.json["size"] == "768*768"
        uploads = [numpy.asarray(Image.open(io.BytesIO(r.files["file"][1])).convert("RGB")).astype(int)
                   for r in emu.requests if "/media/" in r.path]
        (mask,) = [u for u in uploads if (u == u[:, :, :1]).all()]  # the one upload in greys
        square = numpy.zeros((768, 768), dtype=bool)
        square[192:576, 192:576] = True  # the core nodes' square: 384x384 at x 192, y 192
        assert (mask[:, :, 0][square] > 250).all() and (mask[:, :, 0][~square] < 5).all()
    if name == "07_controlnet_canny":
        (submit,) = emu.requests_to("POST /api/v3/wavespeed-ai/z-image-turbo/controlnet")
        assert submit.json["mode"] == "none" and submit.json["strength"] == 1.0
    if name == "04_generate_then_edit":
        edit = emu.requests_to("POST /v1/images/edits")[0]
        assert edit.form["strength"] == "0.35" and edit.form["guidance_scale"] == "6.5"
        assert edit.form["size"] == "1024x1024"
