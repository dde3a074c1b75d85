"""The four ComfyUI nodes, loaded the way ComfyUI loads a pack, run against the emulator on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.comfy_stubs import MUG, PACK_DIR, PACK_MODULE, FakeInterrupt, call_node, pack_nodes
from zimage_api.emulator import DEMO_KEY, Emulator

NEGATIVE = "no text, no watermark, no extra hands, no extra limbs, no logo, no signature, no border"


def errors_of(nodes: ModuleType) -> ModuleType:
    return sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".zimage_api.errors"]


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0


def assert_pixels(image: torch.Tensor, pictures: list[bytes], *, ordered: bool = True) -> None:
    """The IMAGE batch holds exactly these pictures (in this order, or in any order when requests ran together)."""
    assert image.dtype == torch.float32 and image.device.type == "cpu"
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert image.shape[0] == len(pictures)
    expected = [decode(data) for data in pictures]
    for index in range(image.shape[0]):
        got = image[index].numpy()
        if ordered:
            np.testing.assert_allclose(got, expected[index], atol=1e-6)
        else:
            match = next(i for i, e in enumerate(expected) if e.shape == got.shape and np.allclose(got, e, atol=1e-6))
            expected.pop(match)


def generate(nodes: ModuleType, **overrides: Any) -> tuple[torch.Tensor, str]:
    args: dict[str, Any] = dict(prompt=MUG, negative_prompt=NEGATIVE, model="Z-Image-Base", api="v1/images",
                                guidance_scale=7.5, width=512, height=384, seed=5, count=2, unique_id="7")
    args.update(overrides)
    return call_node(nodes.ZImageGenerate().generate(**args))


def reference(width: int, height: int, batch: int = 1) -> torch.Tensor:
    ys = torch.linspace(0, 1, height).view(1, height, 1, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width, 1)
    shade = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) / max(batch, 1)
    return torch.cat([xs.expand(batch, height, width, 1), ys.expand(batch, height, width, 1),
                      shade.expand(batch, height, width, 1)], dim=-1).contiguous()


# -- loading and declarations -----------------------------------------------------------------------------------------


def test_pack_loads_like_comfyui_with_every_node(pack: ModuleType) -> None:
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {
        "ZImageGenerate": "Z-Image Generate", "ZImageEdit": "Z-Image Edit", "ZImageLoRA": "Z-Image LoRA",
        "ZImageInpaint": "Z-Image Inpaint", "ZImageControlNet": "Z-Image ControlNet",
        "QingboTaskSubmit": "Qingbo Task Submit", "QingboTaskPoll": "Qingbo Task Poll"}
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert pack.WEB_DIRECTORY == "./web"
    assert set(pack.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"}
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "Z-Image" and len(cls.DESCRIPTION) > 40
        assert callable(getattr(cls(), cls.FUNCTION))
        assert not hasattr(cls, "IS_CHANGED")
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)


def test_every_input_has_a_tooltip_and_none_is_a_key(pack: ModuleType) -> None:
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert spec["hidden"] == {"unique_id": "UNIQUE_ID"}, name
        for section in ("required", "optional"):
            for input_name, declaration in spec.get(section, {}).items():
                assert len(declaration) == 2 and declaration[1].get("tooltip"), (name, input_name)
                assert "key" not in input_name.lower() and "token" not in input_name.lower(), (name, input_name)
                options = declaration[1]
                if "default" in options and isinstance(declaration[0], list):
                    assert options["default"] in declaration[0], (name, input_name)
                if "min" in options:
                    assert options["min"] <= options["default"] <= options["max"], (name, input_name)


def test_declared_inputs_match_the_issue(pack: ModuleType) -> None:
    generate_spec = pack.NODE_CLASS_MAPPINGS["ZImageGenerate"].INPUT_TYPES()
    required = generate_spec["required"]
    assert list(required) == ["prompt", "negative_prompt", "model", "api", "guidance_scale", "width", "height",
                              "seed", "count"]
    assert required["prompt"][1]["default"] == MUG and required["prompt"][1]["multiline"]
    assert required["negative_prompt"][1]["default"] == NEGATIVE
    assert required["api"][0] == ["v1/images", "v3"] and required["api"][1]["default"] == "v1/images"
    assert required["guidance_scale"][1].items() >= {"default": 7.5, "min": 0.0, "max": 20.0, "step": 0.1}.items()
    assert required["width"][1].items() >= {"default": 1024, "min": 256, "max": 2048, "step": 16}.items()
    assert required["seed"][1].items() >= {"min": -1, "max": 2147483647, "control_after_generate": True}.items()
    assert "seed + i" in required["seed"][1]["tooltip"]
    assert list(generate_spec["optional"]) == ["response_format", "output_format", "timeout", "loras"]
    edit = pack.NODE_CLASS_MAPPINGS["ZImageEdit"].INPUT_TYPES()
    assert edit["required"]["image"][0] == "IMAGE"
    assert edit["required"]["strength"][1]["default"] == 0.5 and edit["required"]["guidance_scale"][1]["default"] == 6.5
    assert edit["optional"]["width"][1]["default"] == 0
    submit = pack.NODE_CLASS_MAPPINGS["QingboTaskSubmit"].INPUT_TYPES()
    assert submit["required"]["aspect_ratio"][0] == ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]
    assert submit["required"]["prompt_extend"][1]["default"] is False
    assert list(submit["optional"]) == ["callback_url", "callback_events", "seed_zero_means_random"]
    poll = pack.NODE_CLASS_MAPPINGS["QingboTaskPoll"].INPUT_TYPES()
    assert poll["required"]["task_id"][1]["multiline"] and poll["required"]["timeout"][1]["default"] == 120
    assert pack.NODE_CLASS_MAPPINGS["QingboTaskSubmit"].RETURN_TYPES == ("STRING",)


def test_model_lists_match_the_library(pack: ModuleType) -> None:
    from zimage_api.providers.openai_images import MODELS
    from zimage_api.providers.wavespeed_v3 import MODEL_PATHS

    nodes = pack_nodes()
    widget = nodes.ZImageGenerate.INPUT_TYPES()["required"]["model"][0]
    assert widget == list(MODELS) == list(MODEL_PATHS)
    assert nodes.ZImageEdit.INPUT_TYPES()["required"]["model"][0] == widget


def test_importing_the_pack_alone_is_light(tmp_path: Path) -> None:
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location({PACK_MODULE!r}, {str(PACK_DIR / '__init__.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
            "print(sorted(x for x in ('requests', 'torch', 'PIL', 'comfy', 'server', 'folder_paths', 'urllib3') "
            "if x in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_module_a_node_uses_imports_inside_comfyui(tmp_path: Path) -> None:
    """Inside ComfyUI the library is only reachable through the pack (relative imports), never as `zimage_api`."""
    modules = ["images", "providers.openai_images", "providers.wavespeed_v3", "providers.qingbo_tasks", "ledger",
               "engine", "orders", "parallel",
               "progress", "summary", "sizes", "limits", "clients", "catalog", "polling", "http.transport",
               "store", "providers"]
    code = ("import importlib, importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location({PACK_MODULE!r}, {str(PACK_DIR / '__init__.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
            f"for name in {modules!r}:\n"
            f"    importlib.import_module({PACK_MODULE!r} + '.zimage_api.' + name)\n"
            "print('zimage_api' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1]
    assert out.stdout.strip() == "False"


# -- Z-Image Generate ---------------------------------------------------------------------------------------------


def test_generate_v1_images_one_request_per_picture_with_seed_plus_i(nodes: ModuleType, emu: Emulator) -> None:
    image, info = generate(nodes)
    assert tuple(image.shape) == (2, 384, 512, 3)
    assert_pixels(image, emu.served_images, ordered=False)
    sent = emu.requests_to("POST /v1/images/generations")
    assert len(sent) == 2
    bodies = sorted((r.json for r in sent), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [5, 6]
    for body in bodies:
        assert body["size"] == "512x384" and body["guidance_scale"] == 7.5 and body["n"] == 1
        assert body["model"] == "Z-Image-Base" and body["negative_prompt"] == NEGATIVE and body["prompt"] == MUG
        assert body["response_format"] == "b64_json"
    data = json.loads(info)
    assert data["provider"] == "WaveSpeed" and data["api"] == "v1/images" and data["seeds"] == [5, 6]
    assert data["size"] == "512x384" and data["images"] == 2 and data["guidance_scale"] == 7.5
    assert len(data["prompt_sha256"]) == 12 and DEMO_KEY not in info
    # Picture i is seed + i: the second picture comes back alone from seed 6.
    alone, _ = generate(nodes, seed=6, count=1)
    assert torch.equal(alone[0], image[1])


def test_generate_url_format_downloads_the_pictures(nodes: ModuleType, emu: Emulator) -> None:
    image, info = generate(nodes, count=1, response_format="url")
    assert emu.requests_to("POST /v1/images/generations")[0].json["response_format"] == "url"
    assert len(emu.requests_to("GET /files/*")) == 1
    assert_pixels(image, emu.served_images)
    assert json.loads(info)["urls"][0].startswith(emu.url + "/files/")


def test_generate_reports_progress_and_status_under_the_node(nodes: ModuleType, emu: Emulator) -> None:
    generate(nodes, count=3)
    bar = nodes._Node.context.hooks.bars[0]
    assert bar.total == 300 and bar.node_id == "7"
    assert bar.updates[-1] == (300, 300)
    values = [value for value, _ in bar.updates]
    assert values == sorted(values)
    assert {node for _, node in nodes._Node.context.hooks.texts} == {"7"}
    assert "done: 3 picture(s) 512x384" in nodes._Node.context.hooks.texts[-1][0]
    # the price is on screen before anything is paid
    assert nodes._Node.context.hooks.texts[0][0].startswith("starting: 3 picture(s) at about $0.01 each (about $0.03)")


def test_generate_v3_turbo_sends_no_cfg_and_says_so(nodes: ModuleType, emu: Emulator) -> None:
    image, info = generate(nodes, api="v3", model="Z-Image-Turbo", output_format="jpeg", count=2, seed=11)
    submits = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/turbo")
    assert len(submits) == 2
    for body in (r.json for r in submits):
        assert "guidance_scale" not in body and body["size"] == "512*384" and body["output_format"] == "jpeg"
        assert body["enable_base64_output"] is True
    assert sorted(r.json["seed"] for r in submits) == [11, 12]
    # The emulator draws v3 pictures at a quarter of the size (picture_scale) to keep the test small.
    assert tuple(image.shape) == (2, 96, 128, 3)
    outputs = [emu.tasks[task_id].outputs[0] for task_id in json.loads(info)["task_ids"]]
    assert_pixels(image, outputs)
    data = json.loads(info)
    assert "guidance_scale" not in data and data["api"] == "v3"
    assert any("no effect" in note for note in data["notes"]) and any("guidance_scale" in n for n in data["notes"])
    text = nodes._Node.context.hooks.all_text()
    assert "CFG (guidance_scale) and the negative prompt have no effect" in text and "CFG was not sent" in text


def test_generate_v3_progress_follows_the_prediction(nodes: ModuleType, emu: Emulator, clock: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny real pause per fake sleep lets the node's thread see the intermediate states.
    monkeypatch.setattr(nodes._Node.context, "sleep", lambda s: (clock.sleep(s), time.sleep(0.003)))
    generate(nodes, api="v3", count=1)
    states = nodes._Node.context.hooks.all_text()
    assert "queued" in states and "completed" in states
    bar = nodes._Node.context.hooks.bars[0]
    assert bar.updates[-1] == (100, 100)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"api": "v3", "width": 2048}, ["width 2048", "256-1536", "v1/images"]),
        ({"width": 4096}, ["width 4096", "256-2048"]),
        ({"height": 100}, ["height 100"]),
        ({"prompt": "   "}, ["prompt is empty"]),
        ({"guidance_scale": 25.0}, ["guidance_scale"]),
        ({"count": 9}, ["count 9"]),
        ({"seed": -3}, ["seed -3"]),
        ({"api": "v2"}, ["api 'v2'"]),
        ({"model": "Z-Image-Pro"}, ["model 'Z-Image-Pro'"]),
        ({"timeout": 5}, ["timeout"]),
    ],
)
def test_generate_rejects_bad_input_before_any_request(nodes: ModuleType, emu: Emulator, overrides: dict[str, Any],
                                                        words: list[str]) -> None:
    with pytest.raises(errors_of(nodes).ValidationError) as caught:
        generate(nodes, **overrides)
    for word in words:
        assert word in str(caught.value)
    assert emu.requests == []


def test_generate_without_a_key_says_where_to_put_it(nodes: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                     emu: Emulator) -> None:
    monkeypatch.delenv("WAVESPEED_API_KEY")
    with pytest.raises(errors_of(nodes).ConfigError, match="WAVESPEED_API_KEY"):
        generate(nodes, count=1)
    assert emu.requests == []


def test_a_wrong_key_never_shows_in_the_error(nodes: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                              emu: Emulator) -> None:
    secret = "sk-this-is-a-very-secret-test-key-0123456789"
    monkeypatch.setenv("WAVESPEED_API_KEY", secret)
    with pytest.raises(errors_of(nodes).AuthenticationError) as caught:
        generate(nodes, count=2)
    assert secret not in str(caught.value) and "401" in str(caught.value)
    assert secret not in nodes._Node.context.hooks.all_text()


def test_a_provider_error_is_raised_as_one_sentence(nodes: ModuleType, emu: Emulator) -> None:
    emu.inject("POST /v1/images/generations", "status", status=400,
               body={"error": {"message": "unsupported size", "code": "invalid_size", "param": "size"}})
    with pytest.raises(errors_of(nodes).BadRequestError) as caught:
        generate(nodes, count=1)
    assert str(caught.value) == "WaveSpeed rejected the parameter 'size' (HTTP 400: unsupported size)."


# -- Z-Image Edit -------------------------------------------------------------------------------------------------


def edit(nodes: ModuleType, image: torch.Tensor, **overrides: Any) -> tuple[torch.Tensor, str]:
    args: dict[str, Any] = dict(image=image, prompt=MUG, negative_prompt=NEGATIVE, model="Z-Image-Base",
                                api="v1/images", strength=0.35, guidance_scale=6.5, seed=3, count=1, unique_id="9")
    args.update(overrides)
    return call_node(nodes.ZImageEdit().edit(**args))


def test_edit_v1_images_edits_every_picture_of_the_batch(nodes: ModuleType, emu: Emulator) -> None:
    image, info = edit(nodes, reference(320, 256, batch=2))
    sent = emu.requests_to("POST /v1/images/edits")
    assert len(sent) == 2
    for request in sent:
        assert set(request.files) == {"image"}
        filename, data, content_type = request.files["image"]
        assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (320, 256)
        assert request.form["strength"] == "0.35" and request.form["size"] == "320x256"
        assert request.form["guidance_scale"] == "6.5" and request.form["seed"] == "3"
    assert tuple(image.shape) == (2, 256, 320, 3)
    assert_pixels(image, emu.served_images, ordered=False)
    data = json.loads(info)
    assert data["references"] == 2 and data["strength"] == 0.35 and data["seeds"] == [3, 3]


def test_edit_resizes_a_large_reference_to_1024_before_upload(nodes: ModuleType, emu: Emulator) -> None:
    image, _info = edit(nodes, reference(1300, 1100))
    _filename, data, _type = emu.requests_to("POST /v1/images/edits")[0].files["image"]
    assert Image.open(io.BytesIO(data)).size == (1024, 866)
    # The output keeps the reference's own size, rounded to a multiple of 16.
    assert emu.requests_to("POST /v1/images/edits")[0].form["size"] == "1296x1104"
    assert tuple(image.shape) == (1, 1104, 1296, 3)


def test_edit_v3_uploads_each_reference_once_before_the_predictions(nodes: ModuleType, emu: Emulator) -> None:
    image, info = edit(nodes, reference(640, 480), api="v3", count=2, width=512, height=384)
    paths = [r.path for r in emu.service_requests if r.method == "POST"]
    assert paths[0] == "/api/v3/media/upload/binary" and paths.count("/api/v3/media/upload/binary") == 1
    upload_url = emu.requests_to("POST /api/v3/media/upload/binary")[0]
    submits = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/base")
    assert len(submits) == 2
    for body in (r.json for r in submits):
        assert body["image"].startswith(emu.url + "/files/") and body["strength"] == 0.65  # the denoise: 1 - 0.35
        assert body["size"] == "512*384" and "guidance_scale" not in body
    assert sorted(r.json["seed"] for r in submits) == [3, 4]
    assert upload_url.files["file"][2] == "image/png"
    assert tuple(image.shape) == (2, 96, 128, 3)
    assert_pixels(image, [emu.tasks[t].outputs[0] for t in json.loads(info)["task_ids"]])


def test_edit_rejects_a_channels_first_tensor_before_any_request(nodes: ModuleType, emu: Emulator) -> None:
    with pytest.raises(errors_of(nodes).ValidationError, match="channels last"):
        edit(nodes, torch.zeros(1, 3, 64, 64))
    with pytest.raises(errors_of(nodes).ValidationError, match="256-1536"):
        edit(nodes, reference(64, 64), api="v3", width=1600, height=512)
    assert emu.requests == []


# -- Qingbo Task Submit and Poll ----------------------------------------------------------------------------------


def submit(nodes: ModuleType, **overrides: Any) -> str:
    args: dict[str, Any] = dict(prompt=MUG, aspect_ratio="1:1", resolution="1K", prompt_extend=False, seed=0,
                                count=2, unique_id="3")
    args.update(overrides)
    (task_ids,) = call_node(nodes.QingboTaskSubmit().submit(**args))
    return task_ids


def poll(nodes: ModuleType, task_ids: str, timeout: int = 120) -> tuple[torch.Tensor, str]:
    return call_node(nodes.QingboTaskPoll().poll(task_id=task_ids, timeout=timeout, unique_id="4"))


def test_submit_returns_the_accepted_ids_at_once(nodes: ModuleType, emu: Emulator) -> None:
    task_ids = submit(nodes, count=3).split("\n")
    assert len(task_ids) == 3 and set(task_ids) == set(emu.tasks)
    sent = emu.requests_to("POST /v1/tasks")
    assert len(sent) == 3 and not emu.requests_to("GET *")
    assert all("seed" not in r.json for r in sent)  # seed 0 means random: none is sent
    assert len({r.headers["idempotency-key"] for r in sent}) == 3
    assert all(emu.tasks[t].status == "queued" for t in task_ids)
    assert "pre-consumed 15939 quota ($0.031878)" in nodes._Node.context.hooks.all_text()
    first_line = nodes._Node.context.hooks.texts[0][0]
    assert first_line.startswith("submitting 3 task(s) at about $0.010626 each (about $0.0319)")


def test_submit_passes_seed_plus_i_and_the_callback(nodes: ModuleType, emu: Emulator) -> None:
    submit(nodes, seed=40, count=2, aspect_ratio="16:9", resolution="2K", prompt_extend=True,
           callback_url="https://example.com/hook", callback_events="task.completed, task.failed ,")
    bodies = sorted((r.json for r in emu.requests_to("POST /v1/tasks")), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [40, 41]
    for body in bodies:
        assert body["aspect_ratio"] == "16:9" and body["resolution"] == "2K" and body["prompt_extend"] is True
        assert body["callback_url"] == "https://example.com/hook"
        assert body["callback_events"] == ["task.completed", "task.failed"]


def test_submit_rejects_an_801_character_prompt_before_sending(nodes: ModuleType, emu: Emulator) -> None:
    with pytest.raises(errors_of(nodes).ValidationError) as caught:
        submit(nodes, prompt="x" * 801)
    assert "801 characters" in str(caught.value) and "800" in str(caught.value)
    assert emu.requests == []


def test_poll_collects_every_task_as_one_batch(nodes: ModuleType, emu: Emulator) -> None:
    task_ids = submit(nodes, count=2, aspect_ratio="16:9")
    image, info = poll(nodes, task_ids)
    ids = task_ids.split("\n")
    assert tuple(image.shape) == (2, 144, 256, 3)  # 1K 16:9 is 1024x576, drawn at a quarter by the emulator
    assert_pixels(image, [emu.tasks[t].outputs[0] for t in ids])
    data = json.loads(info)
    assert data["task_ids"] == ids and data["provider"] == "Qingbo" and data["model"] == "z-image-turbo"
    assert data["cost_quota"] == 2 * 5313 and data["cost_usd"] == pytest.approx(0.021252)
    assert data["size"] == "1024x576" and len(data["urls"]) == 2 and DEMO_KEY not in info
    assert "10626 quota ($0.021252)" in nodes._Node.context.hooks.texts[-1][0]
    bar = nodes._Node.context.hooks.bars[-1]
    assert bar.total == 200 and bar.updates[-1] == (200, 200) and bar.node_id == "4"


def test_poll_progress_follows_qingbo(nodes: ModuleType, emu: Emulator, clock: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes._Node.context, "sleep", lambda s: (clock.sleep(s), time.sleep(0.003)))
    task_ids = submit(nodes, count=1)
    poll(nodes, task_ids)
    values = [value for value, _ in nodes._Node.context.hooks.bars[-1].updates]
    assert values == sorted(values) and values[-1] == 100
    assert any(0 < value < 100 for value in values)
    assert "processing" in nodes._Node.context.hooks.all_text()


def test_polling_a_finished_id_again_sends_nothing(nodes: ModuleType, emu: Emulator) -> None:
    task_ids = submit(nodes, count=2)
    first, _ = poll(nodes, task_ids)
    before = len(emu.requests)
    again, info = poll(nodes, task_ids + "\n")
    one, _ = poll(nodes, task_ids.split("\n")[1])
    assert len(emu.requests) == before
    assert torch.equal(first, again) and torch.equal(first[1:], one)
    assert "collected earlier, served from the local copy" in info


def test_poll_reads_pasted_lists(nodes: ModuleType, emu: Emulator) -> None:
    ids = submit(nodes, count=2).split("\n")
    image, info = poll(nodes, f"  {ids[0]}, {ids[1]}\n{ids[0]}\n")
    assert image.shape[0] == 2 and json.loads(info)["task_ids"] == ids


def test_poll_timeout_names_the_tasks_and_how_to_collect_them(nodes: ModuleType, emu: Emulator) -> None:
    emu.inject("POST /v1/tasks", "stuck", times=2)
    ids = submit(nodes, count=2).split("\n")
    with pytest.raises(errors_of(nodes).TaskTimeoutError) as caught:
        poll(nodes, "\n".join(ids), timeout=10)
    message = str(caught.value)
    assert ids[0] in message and ids[1] in message and "Qingbo Task Poll" in message and "10 s" in message
    assert not emu.requests_to("POST /v1/tasks/*/cancel")


def test_poll_failed_task_says_why(nodes: ModuleType, emu: Emulator) -> None:
    emu.inject("POST /v1/tasks", "task_failed", code="upstream_bad_request", message="prompt rejected")
    ids = submit(nodes, count=2).split("\n")
    with pytest.raises(errors_of(nodes).TaskFailedError) as caught:
        poll(nodes, "\n".join(ids))
    message = str(caught.value)
    failed = [t for t in ids if emu.tasks[t].status == "failed"]
    assert len(failed) == 1 and failed[0] in message
    assert "upstream_bad_request" in message and "prompt rejected" in message
    # The other task completed: the message says so, and polling it alone costs nothing more.
    other = next(t for t in ids if t not in failed)
    assert other in message
    before = len(emu.requests)
    assert poll(nodes, other)[0].shape[0] == 1 and len(emu.requests) == before


def test_poll_pictures_of_different_sizes_is_an_error(nodes: ModuleType, emu: Emulator) -> None:
    square = submit(nodes, count=1, aspect_ratio="1:1")
    wide = submit(nodes, count=1, aspect_ratio="16:9")
    with pytest.raises(errors_of(nodes).ValidationError, match="different sizes"):
        poll(nodes, f"{square}\n{wide}")


def test_poll_rejects_an_empty_or_odd_id_before_any_request(nodes: ModuleType, emu: Emulator) -> None:
    with pytest.raises(errors_of(nodes).ValidationError, match="empty"):
        poll(nodes, " \n ")
    with pytest.raises(errors_of(nodes).ValidationError, match="not a valid"):
        poll(nodes, "../../etc/passwd")
    assert emu.requests == []


def test_cancel_mid_poll_stops_quickly_and_cancels_the_queued_task(nodes: ModuleType,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Real time here: the task stays queued for minutes, and Cancel is pressed 0.3 s into the poll.
    with Emulator(queue_seconds=600.0, wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}) as emulator:
        monkeypatch.setenv("QINGBO_API_KEY", DEMO_KEY)
        monkeypatch.setenv("QINGBO_BASE_URL", emulator.url + "/v1")
        monkeypatch.setattr(nodes._Node.context, "clock", time.monotonic)
        monkeypatch.setattr(nodes._Node.context, "sleep", time.sleep)
        task_id = submit(nodes, count=1)
        timer = threading.Timer(0.3, lambda: setattr(nodes._Node.context.hooks, "flag", True))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(FakeInterrupt):
                poll(nodes, task_id, timeout=300)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 1.5
        assert len(emulator.requests_to("POST /v1/tasks/*/cancel")) == 1
        assert emulator.tasks[task_id].status == "cancelled"
        assert "cancelled" in nodes._Node.context.hooks.texts[-1][0]


def test_cancel_pressed_before_the_run_sends_nothing(nodes: ModuleType, emu: Emulator) -> None:
    nodes._Node.context.hooks.flag = True
    with pytest.raises(FakeInterrupt):
        generate(nodes, count=2)
    assert emu.requests == []


def test_the_ledger_goes_to_comfyuis_user_folder(nodes: ModuleType, emu: Emulator, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".zimage_api.store.sqlite"]
    monkeypatch.setattr(nodes._Node.context, "store", None)
    monkeypatch.delenv("ZIMAGE_DATA_DIR")
    nodes._Node.context.hooks.user_dir = str(tmp_path / "user")
    task_ids = submit(nodes, count=1)
    recorded = store.Store(tmp_path / "user" / "comfyui-zimage")
    assert recorded.task(task_ids) is not None
    assert all(DEMO_KEY.encode() not in f.read_bytes() for f in recorded.directory.glob("zimage.sqlite3*"))


def test_default_hooks_are_no_ops_outside_comfyui(pack: ModuleType) -> None:
    nodes = pack_nodes()
    hooks = nodes.ComfyHooks()
    assert hooks.progress_bar(100, "1") is None and hooks.interrupted() is False and hooks.user_directory() is None
    hooks.send_text("hello", "1")
    with pytest.raises(nodes.Interrupted):
        hooks.raise_interrupt()


# -- the pure helpers behind the nodes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_size", "reference_size", "api", "expected"),
    [
        ((0, 0), (1300, 1100), "v1/images", (1296, 1104)),
        ((0, 0), (768, 768), "v1/images", (768, 768)),
        ((0, 0), (4000, 3000), "v1/images", (2048, 1536)),
        ((0, 0), (4000, 3000), "v3", (1536, 1152)),
        ((0, 0), (100, 50), "v3", (512, 256)),
        ((0, 0), (5000, 100), "v3", (1536, 256)),  # too elongated for any size of that ratio: sides clamped
        ((512, 0), (1000, 500), "v1/images", (512, 256)),
        ((0, 600), (1000, 500), "v1/images", (1200, 600)),
        ((640, 480), (10, 10), "v3", (640, 480)),
    ],
)
def test_edit_output_size_from_the_reference(request_size: tuple[int, int], reference_size: tuple[int, int],
                                             api: str, expected: tuple[int, int]) -> None:
    from zimage_api.sizes import size_from_reference, size_limits

    assert size_from_reference(*request_size, *reference_size, size_limits(api)) == expected


def test_run_jobs_stops_waiting_on_cancel_and_keeps_finished_outcomes() -> None:
    from zimage_api.parallel import run_jobs

    cancel, release = threading.Event(), threading.Event()
    ticks: list[float] = []

    def on_tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            cancel.set()

    def fail() -> int:
        raise ValueError("boom")

    def blocked() -> int:
        return int(release.wait(5))

    jobs = [lambda: 1, fail, blocked, blocked, lambda: 5, lambda: 6]
    started = time.monotonic()
    outcomes = run_jobs(jobs, cancel=cancel, on_tick=on_tick, workers=2, tick_seconds=0.02, grace_seconds=0.1)
    release.set()
    assert time.monotonic() - started < 1.0
    assert outcomes[0].value == 1 and isinstance(outcomes[1].error, ValueError)
    assert not outcomes[2].finished and not outcomes[3].finished  # abandoned after the grace period
    assert not outcomes[4].finished and not outcomes[5].finished  # never started once Cancel was seen
