"""Answers are checked before they count: no more pictures than were asked for, bytes that are no picture become a
typed error (never a result, never a receipt), and local picture files are read with a bound, before anything is
sent."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
from PIL import Image

from tests.comfy_stubs import MUG, call_node
from tests.runs import run_task
from zimage_api.cli import run
from zimage_api.emulator import Emulator
from zimage_api.emulator.picture_faults import HTML_LOGIN_PAGE, NOT_A_PICTURE
from zimage_api.errors import ImageDecodeError, ResultDownloadError, ValidationError
from zimage_api.images import (
    MAX_PICTURE_FILE_BYTES,
    PictureInfo,
    check_picture,
    picture_extension,
    read_picture_file,
)
from zimage_api.ledger import Ledger
from zimage_api.providers.openai_images import ImagesClient
from zimage_api.providers.qingbo_tasks import QingboClient
from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

HTML_SAID = (f"an HTML page ({len(HTML_LOGIN_PAGE):,} bytes); this is usually a login, error or proxy page, check "
             "the base URL.")
NOT_A_PICTURE_SAID = (f"data that is not a readable picture ({len(NOT_A_PICTURE)} bytes); try again, or choose PNG "
                      "or JPEG output.")


def encoded(fmt: str, size: tuple[int, int] = (24, 16), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 140, 90)).save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def errors_of(nodes: ModuleType) -> ModuleType:
    return sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".zimage_api.errors"]


# -- the extension and the check, table-driven -------------------------------------------------------------------------


@pytest.mark.parametrize("data, extension", [
    (encoded("PNG"), "png"),
    (encoded("JPEG"), "jpg"),
    (encoded("WEBP"), "webp"),
    (encoded("GIF"), "bin"),
    (b"<!DOCTYPE html><html></html>", "bin"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "bin"),  # RIFF, but a sound
    (b"\x89PNG", "bin"),  # the start of the signature only
    (b"", "bin"),
], ids=["png", "jpeg", "webp", "gif", "html", "riff-wave", "cut-signature", "empty"])
def test_picture_extension_comes_from_the_magic_number(data: bytes, extension: str) -> None:
    assert picture_extension(data) == extension


@pytest.mark.parametrize("fmt, extension", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_check_picture_reads_format_and_size_from_the_header(fmt: str, extension: str) -> None:
    data = encoded(fmt, (40, 30))
    assert check_picture(data, source="the test") == PictureInfo(extension, 40, 30, len(data))


@pytest.mark.parametrize("data, said", [
    (b"", "Expected a picture from the test but got nothing (0 bytes, empty); try again."),
    (HTML_LOGIN_PAGE, f"Expected a picture from the test but got {HTML_SAID}"),
    (b'{"error": {"message": "The picture was blocked by moderation."}}',
     "Expected a picture from the test but got JSON (64 bytes): The picture was blocked by moderation."),
    (NOT_A_PICTURE, f"Expected a picture from the test but got {NOT_A_PICTURE_SAID}"),
    (encoded("GIF"), f"Expected a PNG, JPEG or WebP picture from the test but got a GIF picture "
                     f"({len(encoded('GIF'))} bytes); choose PNG or JPEG output."),
    (encoded("JPEG")[:-2], f"The picture from the test is truncated (JPEG, {len(encoded('JPEG')) - 2} bytes, its "
                           "end is missing); try again."),
    (encoded("PNG", (5000, 4000)), "The picture from the test is 5000x4000 pixels (20,000,000), more than the limit "
                                   "of 16,777,216 pixels (4096x4096); ask for a smaller size."),
], ids=["empty", "html", "json", "garbage", "gif", "cut-jpeg", "too-many-pixels"])
def test_check_picture_refuses_what_is_not_a_whole_picture(data: bytes, said: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        check_picture(data, source="the test")
    assert str(caught.value) == said


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("cut", [2, 12, 40])
def test_check_picture_refuses_a_cut_picture(fmt: str, cut: int) -> None:
    data = encoded(fmt, (64, 64))
    with pytest.raises(ImageDecodeError, match=r"^The picture from the test is (truncated|damaged) "):
        check_picture(data[:-cut], source="the test")


# -- more pictures than asked for --------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_four_hundred_pictures_for_one_asked_keep_one_and_download_one(emu: Emulator, response_format: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    emu.inject("POST /v1/images/generations", "extra_pictures", count=400)
    result = ImagesClient().generate(MUG, width=256, height=256, seed=3, n=1, response_format=response_format)
    assert len(result.images) == 1 and result.seeds == [3]
    assert np.array_equal(pixels(result.images[0]), pixels(emu.served_images[-1]))  # the real one, not an extra
    assert len(emu.requests_to("GET /files/*")) == (1 if response_format == "url" else 0)
    assert len(result.urls) == (1 if response_format == "url" else 0)
    assert "WaveSpeed answered 400 pictures for the 1 asked; keeping the first 1" in caplog.text


def test_a_node_asking_one_picture_gets_a_batch_of_one(nodes: ModuleType, emu: Emulator) -> None:
    emu.inject("POST /v1/images/generations", "extra_pictures", count=400)
    image, _info = call_node(nodes.ZImageGenerate().generate(
        prompt=MUG, negative_prompt="", model="Z-Image-Base", api="v1/images", guidance_scale=7.5, width=256,
        height=256, seed=5, count=1, response_format="url", unique_id="3"))
    assert image.shape[0] == 1
    assert np.allclose(image[0].numpy(), pixels(emu.served_images[-1]) / 255.0, atol=1e-6)
    assert len(emu.requests_to("GET /files/*")) == 1


@pytest.mark.parametrize("base64_output", [False, True])
def test_a_v3_prediction_listing_many_outputs_gives_one(emu: Emulator, clock, base64_output: bool) -> None:
    emu.inject("GET /api/v3/predictions/*/result", "extra_pictures", times=50, count=400)
    result = run_task(WaveSpeedClient(sleep=clock.sleep, now=clock),
        MUG, width=256, height=256, seed=4, base64_output=base64_output, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]]
    assert len(emu.requests_to("GET /files/*")) == (0 if base64_output else 1)
    assert len(Ledger.default().get(result.task_ids[0])["paths"]) == 1


def test_a_qingbo_task_listing_many_pictures_gives_one(emu: Emulator, clock) -> None:
    emu.inject("* /v1/tasks*", "extra_pictures", times=50, count=400)
    result = run_task(QingboClient(sleep=clock.sleep, now=clock), MUG, seed=8, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]] and len(result.urls) == 1
    assert len(emu.requests_to("GET /files/*")) == 1


# -- bytes that are no picture -------------------------------------------------------------------------------------


def test_an_html_page_at_a_v3_result_url_is_a_typed_error_and_no_result(emu: Emulator, clock) -> None:
    emu.inject("GET /files/*", "html_page")
    wave = WaveSpeedClient(sleep=clock.sleep, now=clock)
    with pytest.raises(ResultDownloadError) as caught:
        run_task(wave, MUG, width=256, height=256, seed=4, sleep=clock.sleep, clock=clock)
    (pid,) = emu.tasks
    assert str(caught.value) == (f"{_host(emu)} sent an HTML page instead of the picture of prediction {pid}; the "
                                 "request was paid, so its picture is kept as a URL to download again on the next "
                                 "run at no new charge.")
    entry = Ledger.default().get(pid)
    assert entry["status"] != "completed" and not entry.get("paths")
    assert not Ledger.default().results_dir.exists() or not any(Ledger.default().results_dir.iterdir())
    # The paid prediction is still there: once the URL serves the picture, collecting it succeeds.
    result = wave.collect(pid, sleep=clock.sleep, clock=clock)
    assert result.images == [emu.served_images[-1]]


def test_an_html_page_at_a_qingbo_result_url_is_a_typed_error(emu: Emulator, clock) -> None:
    emu.inject("GET /files/*", "html_page")
    with pytest.raises(ResultDownloadError) as caught:
        run_task(QingboClient(sleep=clock.sleep, now=clock), MUG, seed=8, sleep=clock.sleep, clock=clock)
    (tid,) = emu.tasks
    assert str(caught.value).startswith(f"{_host(emu)} sent an HTML page instead of the picture of task {tid}; the "
                                        "request was paid, so its picture is kept as a URL")
    assert Ledger.default().get(tid)["status"] != "completed"


def test_an_html_page_at_a_v1_result_url_is_a_typed_error(emu: Emulator) -> None:
    emu.inject("GET /files/*", "html_page")
    with pytest.raises(ResultDownloadError) as caught:
        ImagesClient().generate(MUG, width=256, height=256, n=1, response_format="url")
    assert str(caught.value).startswith(f"{_host(emu)} sent an HTML page instead of the result picture; the request "
                                        "was paid, so its picture is kept as a URL")
    assert caught.value.paid and len(caught.value.urls) == 1


def _host(emu: Emulator) -> str:
    return emu.url.split("://", 1)[1]


def test_a_node_meeting_an_html_page_keeps_no_receipt_and_succeeds_next_time(nodes: ModuleType, emu: Emulator) -> None:
    def generate() -> object:
        return call_node(nodes.ZImageGenerate().generate(
            prompt=MUG, negative_prompt="", model="Z-Image-Turbo", api="v3", guidance_scale=7.5, width=256,
            height=256, seed=5, count=1, response_format="url", unique_id="3"))

    emu.inject("GET /files/*", "html_page")
    with pytest.raises(errors_of(nodes).ResultDownloadError, match="sent an HTML page instead of the picture"):
        generate()
    image, _info = generate()  # the same inputs: the prediction already paid for is collected, not bought again
    assert image.shape[0] == 1
    assert np.allclose(image[0].numpy(), pixels(emu.served_images[-1]) / 255.0, atol=1e-6)
    assert len(emu.requests_to("POST /api/v3/wavespeed-ai/*")) == 1


def test_base64_of_bytes_that_are_no_picture_is_a_typed_error(emu: Emulator) -> None:
    emu.inject("POST /v1/images/generations", "not_a_picture")
    with pytest.raises(ImageDecodeError) as caught:
        ImagesClient().generate(MUG, width=256, height=256, n=1)
    assert str(caught.value) == (f"Expected a picture from WaveSpeed's answer (picture 1 of 1) but got "
                                 f"{NOT_A_PICTURE_SAID}")


def test_base64_of_an_html_page_in_a_v3_output_is_a_typed_error(emu: Emulator, clock) -> None:
    emu.inject("GET /api/v3/predictions/*/result", "not_a_picture", times=50, data=HTML_LOGIN_PAGE)
    with pytest.raises(ImageDecodeError) as caught:
        run_task(WaveSpeedClient(sleep=clock.sleep, now=clock), MUG, width=256, height=256, base64_output=True,
                                                               sleep=clock.sleep, clock=clock)
    (pid,) = emu.tasks
    assert str(caught.value) == (f"Expected a picture from WaveSpeed's base64 output of prediction {pid} but got "
                                 f"{HTML_SAID}")


# -- local picture files -------------------------------------------------------------------------------------------


@pytest.fixture
def cli(clock, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    """Run the CLI in-process in tmp_path; returns (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*argv: str) -> tuple[int, str]:
        code = run(list(argv), sleep=clock.sleep, clock=clock)
        return code, capsys.readouterr().err

    return invoke


def _picture(tmp_path: Path) -> Path:
    path = tmp_path / "reference.png"
    Image.new("RGB", (320, 240), (30, 120, 200)).save(path)
    return path


def _special(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A path that is no regular file, and what the message calls it."""
    if kind == "device":
        return "/dev/zero", "a device"
    if kind == "pipe":
        fifo = tmp_path / "pipe.png"
        os.mkfifo(fifo)  # nobody writes to it: opening it for reading the usual way would wait forever
        return str(fifo), "a pipe"
    folder = tmp_path / "folder.png"
    folder.mkdir()
    return str(folder), "a folder"


SPECIAL = ["device", "pipe", "folder"]
needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                 reason="FIFOs and /dev/zero are POSIX")


@needs_posix
@pytest.mark.parametrize("kind", SPECIAL)
def test_a_reference_that_is_no_regular_file_is_refused_before_any_request(kind: str, cli, emu: Emulator,
                                                                           tmp_path: Path) -> None:
    path, called = _special(tmp_path, kind)
    code, err = cli("edit", path, "a plant", "--out", "out")
    assert code == 2
    assert err.splitlines() == [f"error: The reference {path} is {called}, not a picture file; give a PNG, JPEG or "
                                "WebP file."]
    assert emu.requests == []


@needs_posix
@pytest.mark.parametrize("flag, what", [("--mask", "mask"), ("--control", "control")])
@pytest.mark.parametrize("kind", SPECIAL)
def test_a_mask_or_control_that_is_no_regular_file_is_refused(flag: str, what: str, kind: str, cli, emu: Emulator,
                                                              tmp_path: Path) -> None:
    path, called = _special(tmp_path, kind)
    if flag == "--mask":
        code, err = cli("edit", str(_picture(tmp_path)), "a plant", "--mask", path, "--out", "out")
    else:
        code, err = cli("generate", "a plant", "--control", path, "--out", "out")
    assert code == 2
    assert err.splitlines() == [f"error: The {what} {path} is {called}, not a picture file; give a PNG, JPEG or "
                                "WebP file."]
    assert emu.requests == []


@needs_posix
@pytest.mark.parametrize("column", ["reference", "mask", "control"])
def test_a_batch_row_naming_dev_zero_is_refused_before_any_request(column: str, cli, emu: Emulator,
                                                                   tmp_path: Path) -> None:
    row = {"prompt": "a plant", column: "/dev/zero"}
    if column == "mask":
        row["reference"] = str(_picture(tmp_path))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(row) + "\n", encoding="utf-8")
    code, err = cli("batch", str(jobs), "--out", "run", "--no-progress")
    assert code == 2
    assert err.splitlines()[0] == (f"error: row 1: The {column} /dev/zero is a device, not a picture file; "
                                   "give a PNG, JPEG or WebP file.")
    assert emu.requests == []


def test_a_reference_over_the_size_cap_is_refused_unread(cli, emu: Emulator, tmp_path: Path) -> None:
    big = tmp_path / "huge.png"
    with big.open("wb") as file:
        file.truncate(MAX_PICTURE_FILE_BYTES + 1)  # sparse: nothing is written, and nothing should be read
    code, err = cli("edit", str(big), "a plant", "--out", "out")
    assert code == 2
    assert err.splitlines() == [f"error: The reference {big} is 52,428,801 bytes, more than the 52,428,800 bytes "
                                "(50 MiB) a picture file may be; give a smaller PNG, JPEG or WebP file."]
    assert emu.requests == []


def test_read_picture_file_reads_a_regular_file_whole_and_bounds_the_rest(tmp_path: Path) -> None:
    path = _picture(tmp_path)
    assert read_picture_file(path) == path.read_bytes()
    with pytest.raises(ValidationError) as caught:
        read_picture_file(path, what="mask", max_bytes=100)
    assert caught.value.field == "mask"
    assert str(caught.value) == (f"The mask {path} is {path.stat().st_size:,} bytes, more than the 100 bytes "
                                 "(9.54e-05 MiB) a picture file may be; give a smaller PNG, JPEG or WebP file.")
    with pytest.raises(ValidationError, match=r"^Cannot read the control picture .*missing\.png: No such file"):
        read_picture_file(tmp_path / "missing.png", what="control")


def test_the_emulator_checks_picture_fault_parameters(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="count must be a positive integer"):
        emu.inject("POST /v1/images/generations", "extra_pictures", count=0)
    with pytest.raises(TypeError, match="unexpected"):
        emu.inject("GET /files/*", "html_page", status=200)
    emu.inject("POST /v1/images/generations", "not_a_picture", data="plain text")
    body = ImagesClient.build_body(MUG, "", 7.5, 256, 256, None, 1, "Z-Image-Base", "b64_json")
    sent = requests.post(f"{emu.url}/v1/images/generations", json=body,
                         headers={"Authorization": f"Bearer {os.environ['WAVESPEED_API_KEY']}"}, timeout=10)
    assert base64.b64decode(sent.json()["data"][0]["b64_json"]) == b"plain text"
