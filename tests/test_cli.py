"""The command line end to end against the emulator: files written, pixels, requests sent, resume, exit codes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import lines
from tests.conftest import wait_for as _wait_for
from zimage_api.cli import build_parser, run
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[int, str, str]



def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def posts(emu: Emulator, pattern: str = "POST *") -> int:
    """Requests for pictures (the account routes' balance and price requests left out)."""
    return len([r for r in emu.requests_to(pattern) if r in emu.service_requests])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def manifest(out: Path) -> dict[str, dict]:
    state: dict[str, dict] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        state[record["key"]] = record
    return state


# -- generate / edit ------------------------------------------------------------------------------------------------


def test_generate_writes_the_served_picture_and_prints_its_path(cli, emu, tmp_path):
    code, out, err = cli("generate", "a red fox in snow", "--seed", "42", "--width", "512", "--height", "384",
                         "--cfg", "7", "--negative", "blurry", "--out", str(tmp_path / "pics"))
    assert code == 0, err
    [path] = lines(out)
    assert Path(path).name.startswith("wavespeed_") and path.endswith("_42_0.png")
    assert Path(path).read_bytes() == emu.served_images[-1]
    assert pixels(Path(path).read_bytes()).shape == (384, 512, 3)
    [request] = emu.requests_to("POST /v1/images/generations")
    assert request.json == {"model": "Z-Image-Base", "prompt": "a red fox in snow", "negative_prompt": "blurry",
                            "guidance_scale": 7.0, "size": "512x384", "n": 1, "seed": 42,
                            "response_format": "b64_json"}
    # Same command again: same bytes, same file, no duplicate.
    code, out2, _ = cli("generate", "a red fox in snow", "--seed", "42", "--width", "512", "--height", "384",
                        "--cfg", "7", "--negative", "blurry", "--out", str(tmp_path / "pics"))
    assert code == 0 and lines(out2) == [path]
    assert len(os.listdir(tmp_path / "pics")) == 1


def test_generate_count_with_url_outputs_downloads_each(cli, emu, tmp_path):
    code, out, err = cli("generate", "two foxes", "--count", "2", "--response-format", "url", "--width", "256",
                         "--height", "256", "--out", str(tmp_path))
    assert code == 0, err
    paths = lines(out)
    # No --seed: one is drawn, and picture i uses seed + i, as in the nodes; the seeds are in the file names.
    seeds = [int(Path(p).name.rsplit("_", 2)[-2]) for p in paths]
    assert seeds[1] == seeds[0] + 1
    assert sorted(r.json["seed"] for r in emu.requests_to("POST /v1/images/generations")) == seeds
    assert sorted(Path(p).read_bytes() for p in paths) == sorted(emu.served_images)
    assert len(emu.requests_to("GET /files/*")) == 2
    assert [r.json["n"] for r in emu.requests_to("POST /v1/images/generations")] == [1, 1]  # one per picture


def test_generate_v3_polls_with_the_fake_clock_and_records_the_ledger(cli, emu, clock, tmp_path):
    code, out, err = cli("generate", "a lighthouse", "--api", "v3", "--seed", "5", "--count", "2", "--width", "512",
                         "--height", "512", "--out", str(tmp_path))
    assert code == 0, err
    paths = lines(out)
    submits = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/base")
    assert sorted(r.json["seed"] for r in submits) == [5, 6]  # side by side, one per picture
    assert submits[0].json["size"] == "512*512"
    ids = sorted(emu.tasks, key=lambda task_id: emu.tasks[task_id].params["seed"])
    assert [Path(p).name for p in paths] == [f"wavespeed_{ids[0]}_5_0.png", f"wavespeed_{ids[1]}_6_0.png"]
    for path, task_id in zip(paths, ids, strict=True):
        assert Path(path).read_bytes() == emu.tasks[task_id].outputs[0]
    assert clock.sleeps, "the wait used the injected sleep"
    ledger = Ledger()
    assert {ledger.get(i)["status"] for i in ids} == {"completed"}


def test_edit_downscales_the_reference_and_sends_it_as_image(cli, emu, tmp_path):
    reference = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (200, 40, 40)).save(reference)
    code, out, err = cli("edit", str(reference), "the same in winter", "--strength", "0.3", "--seed", "9",
                         "--out", str(tmp_path / "out"))
    assert code == 0, err
    [request] = emu.requests_to("POST /v1/images/edits")
    filename, data, content_type = request.files["image"]
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (1024, 512)
    assert request.form["strength"] == "0.3" and request.form["guidance_scale"] == "6.5"
    [path] = lines(out)
    assert Path(path).name.startswith("wavespeed-edit_") and Path(path).read_bytes() == emu.served_images[-1]


def test_edit_with_v3_uploads_then_submits_the_url(cli, emu, tmp_path):
    reference = tmp_path / "ref.jpg"
    Image.new("RGB", (600, 400), (20, 90, 200)).save(reference)
    code, out, err = cli("edit", str(reference), "as a pencil drawing", "--api", "v3", "--output-format", "jpeg",
                         "--out", str(tmp_path))
    assert code == 0, err
    [upload] = emu.requests_to("POST /api/v3/media/upload/binary")
    assert Image.open(io.BytesIO(upload.files["file"][1])).size == (600, 400)
    [submit] = emu.requests_to("POST /api/v3/*/base")
    assert submit.json["image"].startswith(emu.url + "/files/") and submit.json["strength"] == 0.5
    assert submit.json["size"] == "608*400"  # the reference's size fitted to multiples of 16, as the nodes do
    [path] = lines(out)
    assert path.endswith(".jpg") and Path(path).read_bytes() == emu.served_images[-1]


# -- submit / poll --------------------------------------------------------------------------------------------------


def test_submit_prints_ids_and_poll_collects_them_without_resubmitting(cli, emu, tmp_path, monkeypatch):
    code, out, err = cli("submit", "a paper boat", "--aspect-ratio", "16:9", "--seed", "10", "--count", "2")
    assert code == 0, err
    ids = lines(out)
    assert sorted(ids) == sorted(emu.tasks)
    bodies = [r.json for r in emu.requests_to("POST /v1/tasks")]
    assert sorted(b["seed"] for b in bodies) == [10, 11]
    assert [emu.tasks[task_id].params["seed"] for task_id in ids] == [10, 11]  # printed in seed order
    assert all(set(b) == {"model", "action", "prompt", "aspect_ratio", "resolution", "seed"} for b in bodies)
    assert all(r.headers.get("idempotency-key") for r in emu.requests_to("POST /v1/tasks"))

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(ids) + "\n"))
    code, out, err = cli("poll", "-", "--out", str(tmp_path))
    assert code == 0, err
    paths = lines(out)
    assert [Path(p).name for p in paths] == [f"qingbo_{ids[0]}_10_0.jpg", f"qingbo_{ids[1]}_11_0.jpg"]
    for path, task_id in zip(paths, ids, strict=True):
        assert pixels(Path(path).read_bytes()).tolist() == pixels(emu.tasks[task_id].outputs[0]).tolist()
    assert posts(emu, "POST /v1/tasks") == 2


def test_poll_wavespeed_prediction_by_id(cli, emu, tmp_path):
    from zimage_api.providers.wavespeed_v3 import WaveSpeedClient

    prediction = WaveSpeedClient().submit("a kite", width=256, height=256)
    code, out, err = cli("poll", "--provider", "wavespeed", prediction.id, "--out", str(tmp_path))
    assert code == 0, err
    [path] = lines(out)
    assert Path(path).read_bytes() == emu.tasks[prediction.id].outputs[0]


def test_poll_a_failed_task_exits_1_with_one_line(cli, emu, tmp_path):
    emu.inject("POST /v1/tasks", "task_failed", code="upstream_bad_request", message="prompt rejected")
    code, out, _ = cli("submit", "a boat")
    [task_id] = lines(out)
    code, out, err = cli("poll", task_id, "--out", str(tmp_path))
    assert code == 1 and out == ""
    assert lines(err) == [err.strip()] and err.startswith("error: Qingbo task") and "upstream_bad_request" in err
    assert "Traceback" not in err


# -- exit codes and error lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--cfg", "25"], "--cfg 25.0 is outside 0-20"),
    (["generate", "x", "--width", "100", "--height", "512"], "--width 100 is outside 256-2048"),
    (["generate", "x", "--api", "v3", "--width", "2048", "--height", "1024"], "256-1536"),
    (["generate", "x", "--api", "v3", "--cfg", "7"], "--cfg is not part of WaveSpeed's v3 API"),
    (["generate", "  "], "prompt is empty"),
    (["submit", "y" * 801], "801 characters"),
    (["submit", "x", "--count", "9"], "--count 9 is outside 1-8"),
    (["poll", "../etc/passwd"], "not a valid Qingbo task id"),
    (["edit", "missing.png", "x"], "Cannot read the reference picture"),
    (["generate", "x", "--width", "512"], "both --width and --height"),
    (["generate"], "required: PROMPT"),
    (["generate", "x", "--seed", "abc"], "invalid seed"),
    (["frobnicate"], "invalid choice"),
    # --timeout is a finite number of seconds > 0, checked by the parser before anything is sent.
    (["generate", "x", "--timeout", "0"], "invalid timeout '0': a number of seconds greater than 0"),
    (["generate", "x", "--api", "v3", "--timeout", "-5"], "invalid timeout '-5'"),
    (["poll", "task-abc", "--timeout", "nan"], "invalid timeout 'nan'"),
    (["tasks", "resume", "--timeout", "inf"], "invalid timeout 'inf'"),
    (["batch", "jobs.jsonl", "--timeout", "soon"], "invalid timeout 'soon'"),
    # The last seed of a --count run must be valid too, before the first task is paid for.
    (["submit", "x", "--seed", str(2 ** 31 - 1), "--count", "2"], f"would use seeds up to {2 ** 31}"),
    (["generate", "x", "--api", "v3", "--seed", str(2 ** 31 - 2), "--count", "3"], f"at most {2 ** 31 - 3}"),
])
def test_bad_usage_exits_2_with_one_line_and_sends_nothing(cli, emu, argv, message):
    code, out, err = cli(*argv)
    assert code == 2
    assert len(lines(err)) == 1 and err.startswith("error: ") and message in err
    assert emu.requests == []


@pytest.mark.parametrize("extra, message", [
    (["", "--api", "v3"], "prompt is empty"),
    (["x", "--api", "v3", "--strength", "1.5"], "--strength 1.5 is outside 0-1"),
    (["x", "--strength", "-0.1"], "--strength -0.1 is outside 0-1"),
])
def test_bad_edit_is_rejected_before_the_upload(cli, emu, tmp_path, extra, message):
    reference = tmp_path / "ref.png"
    Image.new("RGB", (300, 300)).save(reference)
    code, _, err = cli("edit", str(reference), *extra)
    assert code == 2 and message in err
    assert emu.requests == []


def test_missing_key_is_a_usage_error_naming_the_variable(cli, emu, monkeypatch):
    monkeypatch.delenv("WAVESPEED_API_KEY")
    code, _, err = cli("generate", "x")
    assert code == 2 and err.startswith("error: No WaveSpeed API key") and "WAVESPEED_API_KEY" in err
    assert emu.requests == []


def test_rejected_key_is_a_failed_job_and_never_printed(cli, emu, monkeypatch):
    monkeypatch.setenv("WAVESPEED_API_KEY", "sk-wrong-key-123456789")
    code, _, err = cli("generate", "x", "--width", "256", "--height", "256")
    assert code == 1 and "rejected the API key (HTTP 401" in err
    assert "sk-wrong-key-123456789" not in err


def test_verbose_logs_the_call_and_shows_the_traceback(cli, emu):
    code, _, err = cli("generate", "x", "--width", "256", "--height", "256", "--verbose")
    assert code == 0 and "protocol=images.generate" in err and "prompt_sha256=" in err
    code, _, err = cli("--verbose", "generate", "x", "--cfg", "30")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_ctrl_c_exits_130_naming_the_task_in_flight(cli, emu, clock):
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    code, out, err = cli("generate", "x", "--api", "v3", "--width", "256", "--height", "256", sleep=interrupt)
    [task_id] = list(emu.tasks)
    assert code == 130 and task_id in err and "tasks resume" in err
    assert Ledger().get(task_id)["status"] not in ("completed", "failed")


# -- tasks ----------------------------------------------------------------------------------------------------------


def test_tasks_lists_unfinished_and_resume_collects_them(cli, emu, tmp_path):
    code, out, err = cli("generate", "slow", "--api", "v3", "--width", "256", "--height", "256", "--timeout", "1")
    [task_id] = list(emu.tasks)
    assert code == 1 and task_id in err and "still running" in err
    code, out, _ = cli("tasks")
    assert code == 0 and "Unfinished tasks (1" in out and task_id in out and "wavespeed" in out
    code, out, err = cli("tasks", "resume", "--out", str(tmp_path))
    assert code == 0, err
    [path] = lines(out)
    assert Path(path).read_bytes() == emu.tasks[task_id].outputs[0]
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 1
    code, out, _ = cli("tasks", "list", "--limit", "5")
    assert "No unfinished tasks." in out and task_id in out


# -- batch ----------------------------------------------------------------------------------------------------------


def batch_rows(tmp_path: Path) -> list[dict]:
    reference = tmp_path / "ref.png"
    Image.new("RGB", (1500, 1000), (30, 160, 90)).save(reference)
    return [
        {"prompt": "a red fox", "seed": 1, "width": 256, "height": 256, "cfg": 7.5},
        {"prompt": "a lighthouse", "provider": "wavespeed-v3", "size": "256x256", "seed": 2},
        {"prompt": "a paper boat", "provider": "qingbo", "aspect_ratio": "4:3", "seed": 3},
        {"prompt": "in winter", "reference": "ref.png", "strength": 0.4, "width": 256, "height": 256},
        {"prompt": "a paper boat", "provider": "qingbo", "aspect_ratio": "4:3", "seed": 3},  # a repeated row
    ]


def test_batch_runs_every_row_writes_the_manifest_and_resumes_without_resubmitting(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", batch_rows(tmp_path))
    out_dir = tmp_path / "out"
    code, out, err = cli("batch", str(jobs), "--concurrency", "3", "--out", str(out_dir))
    assert code == 0, err
    paths = lines(out)
    assert len(paths) == 5 and all(Path(p).exists() for p in paths)
    assert sorted(set(Path(p).read_bytes() for p in paths)) == sorted(emu.served_images)
    assert "batch [" in err and "5 of 5 done" in err
    state = manifest(out_dir)
    assert len(state) == 5 and {r["status"] for r in state.values()} == {"done"}
    qingbo = [r for r in state.values() if r["provider"] == "qingbo"]
    assert {r["cost_usd"] for r in qingbo} == {0.010626} and not qingbo[0]["cost_estimated"]
    # The repeated row has the same inputs, so it gets the same task: nothing is paid twice.
    assert all(r["task_id"] in emu.tasks for r in qingbo) and qingbo[0]["task_id"] == qingbo[1]["task_id"]
    edit = next(r for r in state.values() if r["params"].get("reference"))
    assert edit["params"]["strength"] == 0.4 and edit["cost_estimated"]
    [edit_request] = emu.requests_to("POST /v1/images/edits")
    assert Image.open(io.BytesIO(edit_request.files["image"][1])).size == (1024, 683)
    assert all(r["prompt_sha256"] and r["paths"] for r in state.values())

    before = posts(emu)
    code, out, err = cli("batch", str(jobs), "--concurrency", "3", "--out", str(out_dir))
    assert code == 0 and "5 of 5 done (5 earlier)" in err
    # Nothing to run, and still every row's pictures on stdout, in the rows' order, as the first run printed them.
    assert lines(out) == [path for row in sorted(state.values(), key=lambda r: r["row"]) for path in row["paths"]]
    assert posts(emu) == before


def test_batch_collects_an_unfinished_qingbo_task_instead_of_resubmitting(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a boat", "provider": "qingbo", "seed": 4}])
    out_dir = tmp_path / "out"
    code, out, err = cli("batch", str(jobs), "--timeout", "1", "--out", str(out_dir))
    [task_id] = list(emu.tasks)
    assert code == 1 and out == "" and "row 1:" in err and task_id in err
    [record] = manifest(out_dir).values()
    assert record["status"] == "timeout" and record["task_id"] == task_id
    assert Ledger().get(task_id)["status"] == "timeout"  # unfinished in the ledger

    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 0, err
    assert posts(emu, "POST /v1/tasks") == 1
    [path] = lines(out)
    assert Path(path).read_bytes() == emu.tasks[task_id].outputs[0]
    assert Ledger().get(task_id)["status"] == "completed"


def test_batch_finds_its_task_in_the_ledger_when_the_manifest_line_is_lost(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a boat", "provider": "qingbo"},
                                                 {"prompt": "a kite", "provider": "wavespeed-v3",
                                                  "size": "256x256"}])
    out_dir = tmp_path / "out"
    code, _, _ = cli("batch", str(jobs), "--timeout", "1", "--out", str(out_dir))
    assert code == 1 and len(emu.tasks) == 2
    (out_dir / "manifest.jsonl").unlink()  # e.g. killed between the ledger write and the manifest write
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 0, err
    assert posts(emu, "POST /v1/tasks") == 1 and posts(emu, "POST /api/v3/wavespeed-ai/*") == 1
    assert sorted(Path(p).read_bytes() for p in lines(out)) == sorted(t.outputs[0] for t in emu.tasks.values())


def test_batch_dry_run_sends_nothing_and_estimates_the_cost(cli, emu, tmp_path):
    rows = batch_rows(tmp_path) + [{"prompt": "extended", "provider": "qingbo", "prompt_extend": True}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    code, out, err = cli("batch", str(jobs), "--dry-run", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert emu.requests == []
    assert "6 rows: 0 done earlier" in out and "6 to run" in out
    # Qingbo's billed price, 5,313 quota; prompt_extend's extra is unpublished, so no figure is made up for it.
    assert ("  qingbo            3 pictures    ~$0.0319 (about $0.010626 each, 5,313 quota; 1 with prompt_extend, "
            "which adds an extra cost that Qingbo does not publish)") in out
    assert ("  wavespeed-images  2 pictures    ~$0.0200\n"
            "    Z-Image-Base on /v1/images: 2 x about $0.01 = ~$0.0200") in out
    assert "  wavespeed-v3      1 picture     ~$0.0100\n    wavespeed-ai/z-image/base: 1 x $0.01 = ~$0.0100" in out
    assert "estimated cost: about $0.0619" in out
    assert "0.002" not in out and "0.010625" not in out
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_batch_reports_bad_rows_with_their_numbers_and_sends_nothing(cli, emu, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("prompt,provider,size,seed,cfg,aspect_ratio\n"
                    "a fox,wavespeed-images,512x512,1,7.5,\n"
                    "\n"
                    "a fox,wavespeed-images,512x512,1,25,\n"
                    ",qingbo,,,,\n"
                    "a boat,qingbo,,,,5:4\n"
                    "a kite,wavespeed-v3,2048x2048,,,\n"
                    "a kite,wavespeed-v3,256x256,abc,,\n"
                    "a boat,qingbo,512x512,,,\n"
                    "a boat,dall-e,,,,\n", encoding="utf-8")
    for extra in ([], ["--dry-run"]):
        code, out, err = cli("batch", str(jobs), *extra, "--out", str(tmp_path / "out"))
        assert code == 2
        errors = [line for line in lines(err) if line.startswith("error: row")]
        assert errors == [
            "error: row 2 (line 4): The cfg 25.0 is outside 0-20.",
            "error: row 3 (line 5): The prompt is empty; describe the picture you want.",
            "error: row 4 (line 6): The aspect_ratio '5:4' is not one of 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3.",
            "error: row 5 (line 7): The width 2048 and the height 2048 are outside 256-1536 pixels, the range of "
            "WaveSpeed v3; choose provider wavespeed-images for sizes up to 2048.",
            "error: row 6 (line 8): The seed must be a whole number, not 'abc'.",
            "error: row 7 (line 9): qingbo does not take size; it takes prompt, seed, aspect_ratio, resolution "
            "and prompt_extend.",
            "error: row 8 (line 10): The provider 'dall-e' is not one of wavespeed-images, wavespeed-v3, qingbo.",
        ]
        assert "7 of 8 rows are invalid" in err
    assert emu.requests == []


def test_batch_failed_row_exits_1_and_is_retried_with_a_new_task(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a boat", "provider": "qingbo"},
                                                 {"prompt": "a fox", "width": 256, "height": 256}])
    emu.inject("POST /v1/tasks", "task_failed", code="upstream_unavailable")
    code, out, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 1 and len(lines(out)) == 1 and "upstream_unavailable" in err and "batch [" not in err
    code, out, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert posts(emu, "POST /v1/tasks") == 2 and len(lines(out)) == 2  # the row done earlier, then the new one
    assert posts(emu, "POST /v1/images/generations") == 1


def test_batch_row_whose_result_expired_gets_a_new_task_on_the_next_run(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a kite", "provider": "wavespeed-v3",
                                                 "size": "256x256", "response_format": "url"}])
    emu.inject("GET /files/*", "expired")
    code, _, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 1 and "expired" in err
    [record] = manifest(tmp_path / "out").values()
    assert record["status"] == "failed" and record["task_id"]
    code, out, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 2 and len(lines(out)) == 1


def test_batch_without_a_key_exits_2_before_sending_anything(cli, emu, tmp_path, monkeypatch):
    monkeypatch.delenv("QINGBO_API_KEY")
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a fox", "width": 256, "height": 256},
                                                 {"prompt": "a boat", "provider": "qingbo"}])
    for extra in ([], ["--dry-run"]):
        code, _, err = cli("batch", str(jobs), *extra, "--out", str(tmp_path / "out"))
        assert code == 2 and "error: No Qingbo API key: set the environment variable QINGBO_API_KEY" in err
    assert emu.requests == []


def test_batch_unknown_field_and_unknown_csv_column(cli, emu, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"promt": "typo"}\n"a bare string"\n{"prompt": "cut\n', encoding="utf-8")
    code, _, err = cli("batch", str(jobs), "--dry-run")
    assert code == 2 and "error: row 1: Unknown field 'promt'" in err
    assert "error: row 2: Expected a JSON object, found str." in err
    assert "error: row 3: Not valid JSON (Unterminated string" in err
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text("promt,seed\nx,1\n")
    code, _, err = cli("batch", str(csv_file))
    assert code == 2 and len(lines(err)) == 1 and "unknown column(s) 'promt'" in err


def test_batch_ctrl_c_names_the_tasks_in_flight_and_a_rerun_collects_them(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a boat", "provider": "qingbo"}])

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    code, _, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"), sleep=interrupt)
    [task_id] = list(emu.tasks)
    assert code == 130 and task_id in err
    code, out, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 0 and posts(emu, "POST /v1/tasks") == 1 and len(lines(out)) == 1


# -- paid work is never lost or paid twice: Ctrl-C, uncertain submits, --out, missing pictures ---------------------


def _subprocess_env() -> dict[str, str]:
    """The test's environment (keys, base URLs and data folder of the emulator) for a CLI subprocess."""
    return dict(os.environ, PYTHONPATH=str(ROOT))



def _batch_subprocess(jobs: Path, out_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zimage_api", "batch", str(jobs), "--out", str(out_dir),
                             "--no-progress"], cwd=jobs.parent, env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_batch_first_ctrl_c_lets_the_submit_in_flight_return_and_keeps_its_id(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a kite", "provider": "wavespeed-v3",
                                                 "size": "256x256", "response_format": "url"}])
    out_dir = tmp_path / "out"
    emu.inject("POST /api/v3/wavespeed-ai/*", "delay", seconds=1.0)  # the paid submit is still under way at Ctrl-C
    process = _batch_subprocess(jobs, out_dir)
    try:
        _wait_for(lambda: posts(emu, "POST /api/v3/wavespeed-ai/*") == 1, "the submit")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    [task_id] = list(emu.tasks)
    assert process.returncode == 130
    assert "finishing the requests in flight" in err and "Press Ctrl-C again to exit at once" in err
    assert task_id in lines(err)[-1] and "cut short" not in lines(err)[-1] and "Traceback" not in err
    [record] = manifest(out_dir).values()
    assert record["status"] == "submitted" and record["task_id"] == task_id
    assert Ledger().get(task_id)["batch_row"].endswith("#" + record["key"])

    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 0, err
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 1  # collected, not paid again
    assert Path(lines(out)[0]).read_bytes() == emu.tasks[task_id].outputs[0]


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_batch_second_ctrl_c_exits_at_once_and_the_cut_submit_is_uncertain(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a kite", "provider": "wavespeed-v3",
                                                 "size": "256x256", "response_format": "url"}])
    out_dir = tmp_path / "out"
    emu.inject("POST /api/v3/wavespeed-ai/*", "delay", seconds=3.0)
    process = _batch_subprocess(jobs, out_dir)
    try:
        _wait_for(lambda: posts(emu, "POST /api/v3/wavespeed-ai/*") == 1, "the submit")
        process.send_signal(signal.SIGINT)
        assert "Press Ctrl-C again" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in err, err
    last = lines(err)[-1]
    assert "the submit of row 1 (wavespeed-v3) was cut short" in last and "may have been processed and charged" in last
    [record] = manifest(out_dir).values()
    assert record["status"] == "submitting" and record["task_id"] is None  # the trace left by the forced exit

    code, out, _ = cli("batch", str(jobs), "--dry-run", "--out", str(out_dir))
    assert code == 0 and "1 uncertain (skipped), 0 to run" in out and "uncertain: row 1" in out
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 1 and out == "" and "1 uncertain" in err and "--retry-uncertain" in err
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 1
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--retry-uncertain")
    assert code == 0, err
    assert posts(emu, "POST /api/v3/wavespeed-ai/*") == 2 and len(lines(out)) == 1


def test_batch_submit_that_may_have_been_charged_is_uncertain_and_not_sent_again(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a fox", "width": 256, "height": 256},
                                                 {"prompt": "a kite", "provider": "wavespeed-v3",
                                                  "size": "256x256"}])
    out_dir = tmp_path / "out"
    # The server processes each submit, then the connection drops before the answer.
    emu.inject("POST /v1/images/generations", "reset_after")
    emu.inject("POST /api/v3/wavespeed-ai/*", "reset_after")
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--no-progress")
    assert code == 1 and out == ""
    assert err.count("may have been processed and charged") == 2 and err.count("marked uncertain") == 2
    assert "0 failed, 2 uncertain" in err
    assert {r["status"] for r in manifest(out_dir).values()} == {"uncertain"}
    sent = posts(emu)

    code, out, _ = cli("batch", str(jobs), "--dry-run", "--out", str(out_dir))
    assert code == 0 and "2 uncertain (skipped), 0 to run" in out and "uncertain: row 1, row 2" in out
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 1 and out == "" and posts(emu) == sent
    assert "2 uncertain rows skipped (row 1, row 2)" in err and "--retry-uncertain" in err

    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--retry-uncertain")
    assert code == 0, err
    assert posts(emu) == sent + 2 and len(lines(out)) == 2


@pytest.mark.parametrize("argv", [
    ["generate", "a fox", "--out", "a-file"],
    ["generate", "a fox", "--api", "v3", "--out", "a-file"],
    ["edit", "ref.png", "in winter", "--out", "a-file/sub"],
    ["poll", "task-abc", "--out", "a-file"],
    ["batch", "jobs.jsonl", "--out", "a-file"],
])
def test_an_unusable_out_folder_is_reported_before_anything_is_paid(cli, emu, tmp_path, argv):
    (tmp_path / "a-file").write_text("not a folder")
    Image.new("RGB", (300, 300)).save(tmp_path / "ref.png")
    write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a fox"}])
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert len(lines(err)) == 1 and err.startswith("error: ") and "a-file" in err and "nothing was sent" in err
    assert emu.requests == []


@pytest.mark.parametrize("api, fault", [("v1/images", "POST /v1/images/generations"),
                                        ("v3", "GET /api/v3/predictions/*")])
def test_paid_pictures_that_cannot_be_written_to_out_are_kept_in_the_data_folder(cli, emu, clock, tmp_path,
                                                                                 isolated_env, api, fault):
    out_dir = tmp_path / "pictures"

    def sleep_then_break_out(seconds: float) -> None:
        clock.sleep(seconds)
        if out_dir.is_dir():  # --out was fine before the request; now it becomes a file
            out_dir.rmdir()
            out_dir.write_text("in the way")

    emu.inject(fault, "overloaded")  # one 503 and a retry: the waits run sleep_then_break_out
    code, out, err = cli("generate", "a fox", "--api", api, "--width", "256", "--height", "256", "--out",
                         str(out_dir), sleep=sleep_then_break_out)
    assert code == 1
    [path] = lines(out)
    assert Path(path).parent == isolated_env / "results"
    assert Path(path).read_bytes() == emu.served_images[-1]
    assert f"Could not write the pictures to {out_dir}" in err and str(isolated_env / "results") in err
    assert posts(emu, "POST /v1/images/*") + posts(emu, "POST /api/v3/wavespeed-ai/*") == 1 + (api == "v1/images")


def test_batch_done_rows_with_missing_pictures_are_collected_again_or_reported(cli, emu, tmp_path, isolated_env):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": "a fox", "width": 256, "height": 256, "seed": 1},
        {"prompt": "a boat", "provider": "qingbo", "seed": 2},
        {"prompt": "a kite", "provider": "wavespeed-v3", "size": "256x256", "seed": 3},
    ])
    out_dir = tmp_path / "out"
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir))
    assert code == 0, err
    first = {Path(p).name: Path(p).read_bytes() for p in lines(out)}
    for name in first:
        (out_dir / name).unlink()
    state = manifest(out_dir)
    kite = next(r["task_id"] for r in state.values() if r["provider"] == "wavespeed-v3")
    for copy in Ledger().get(kite)["paths"]:  # no local copy either: downloaded again (free)
        Path(copy).unlink()
    sent = posts(emu)

    code, out, _ = cli("batch", str(jobs), "--dry-run", "--out", str(out_dir))
    assert code == 0 and "3 done earlier with missing pictures (to collect again" in out and "0 to run" in out
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--no-progress")
    assert code == 0, err
    # Nothing paid: the tasks are collected again, and the v1/images picture comes back from its kept copy.
    assert posts(emu) == sent and posts(emu, "POST /v1/images/generations") == 1
    assert {Path(p).name: Path(p).read_bytes() for p in lines(out)} == first
    assert "3 of 3 done (0 earlier, 3 collected again from their tasks)" in err and "cost $0.0000" in err

    for name in first:
        (out_dir / name).unlink()
    for kept in (isolated_env / "receipts").glob("*"):  # no copy anywhere now: another run would pay again
        kept.unlink()
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--no-progress")
    assert code == 1 and posts(emu) == sent
    assert "1 done row with missing pictures skipped (row 1)" in err and "--retry-missing" in err
    code, out, err = cli("batch", str(jobs), "--out", str(out_dir), "--retry-missing")
    assert code == 0, err
    assert posts(emu, "POST /v1/images/generations") == 2  # asked for: paid again
    assert sorted(os.listdir(out_dir)) == sorted([*first, "manifest.jsonl"])


class _ClosedPipe(io.TextIOBase):
    """A stdout whose reader has gone (`... | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_batch_stops_quietly_when_stdout_is_closed_and_leaves_no_request_cut(emu, clock, capsys, tmp_path,
                                                                             monkeypatch):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": f"fox {i}", "width": 256, "height": 256}
                                                 for i in range(5)])
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    code = run(["batch", str(jobs), "--out", str(tmp_path / "out"), "--no-progress"], sleep=clock.sleep,
               clock=clock)
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err and "error" not in err
    state = manifest(tmp_path / "out")
    assert {r["status"] for r in state.values()} == {"done"}  # every row that was sent finished and was recorded
    assert posts(emu) == len(state) < 5  # no new row started after the pipe closed
    assert f"batch: {len(state)} of 5 done" in err


def test_tasks_into_a_closed_pipe_exits_0_without_a_traceback(cli, emu, tmp_path):
    code, _, _ = cli("submit", "a boat", "--count", "3")
    assert code == 0
    process = subprocess.Popen([sys.executable, "-m", "zimage_api", "tasks"], cwd=tmp_path, env=_subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line
    err = process.stderr.read()
    assert process.wait(timeout=30) == 0 and err == b""


def test_output_the_console_cannot_encode_is_escaped_instead_of_crashing(emu, clock, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    streams = {}
    for name in ("stdout", "stderr"):  # a redirected console on Western Windows
        streams[name] = io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="strict", write_through=True)
        monkeypatch.setattr(sys, name, streams[name])
    write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": f"boat {i}", "provider": "qingbo"} for i in range(3)])
    assert run(["generate", "a fox", "--width", "256", "--height", "256", "--out", "图片"], sleep=clock.sleep,
               clock=clock) == 0
    assert run(["batch", "jobs.jsonl", "--out", "输出"], sleep=clock.sleep, clock=clock) == 0
    out = streams["stdout"].buffer.getvalue().decode("cp1252")
    err = streams["stderr"].buffer.getvalue().decode("cp1252")
    assert len(lines(out)) == 4 and all(line.startswith(("\\u56fe\\u7247", "\\u8f93\\u51fa")) for line in lines(out))
    assert len(os.listdir(tmp_path / "图片")) == 1 and len(os.listdir(tmp_path / "输出")) == 4  # + the manifest
    assert "3 of 3 done" in err and "\\u8f93\\u51fa" in err
    assert {r["status"] for r in manifest(tmp_path / "输出").values()} == {"done"}


# -- tasks and poll -------------------------------------------------------------------------------------------------


def test_tasks_from_another_server_are_shown_with_it_and_skipped_by_resume(cli, emu, clock, tmp_path, monkeypatch):
    code, out, _ = cli("submit", "a boat")
    [old_task] = lines(out)
    other = Emulator(clock=clock, queue_seconds=0.5, process_seconds=2.0, picture_scale=0.25,
                     wavespeed_keys={DEMO_KEY}, qingbo_keys={DEMO_KEY}).start()
    try:
        monkeypatch.setenv("QINGBO_BASE_URL", other.url)  # another gateway, or an emulator restarted elsewhere
        code, out, _ = cli("submit", "a kite")
        [new_task] = lines(out)
        code, out, _ = cli("tasks")
        assert code == 0
        [old_row] = {line for line in lines(out) if old_task in line}
        [new_row] = {line for line in lines(out) if new_task in line}
        assert old_row.endswith(f"issued by {emu.url}") and "issued by" not in new_row
        sent = len(emu.requests)
        results = [cli("tasks", "resume", "--out", str(tmp_path)) for _ in range(2)]
        for code, _, err in results:  # skipped each time, and the run says it did not collect everything
            assert code == 1, err
            [note] = [line for line in lines(err) if line.startswith("note: ")]
            assert old_task in note and emu.url in note and "QINGBO_BASE_URL" in note
            assert lines(err)[-1] == ("error: 1 unfinished task was not collected, because another server issued it "
                                      "(see the note above).")
        [path] = lines(results[0][1])
        assert Path(path).read_bytes() == other.tasks[new_task].outputs[0]
        assert lines(results[1][1]) == []
        assert len(emu.requests) == sent
        assert Ledger().get(old_task)["status"] not in ("not_found", "completed")
    finally:
        other.stop()


def test_tasks_limit_before_list_is_kept(cli, emu):
    code, out, _ = cli("submit", "a boat", "--count", "3")
    submitted = lines(out)
    assert cli("poll", *lines(out), "--out", "boats")[0] == 0  # finished: listed under Recent
    for argv in (["tasks", "--limit", "1", "list"], ["tasks", "list", "--limit", "1"], ["tasks", "--limit", "1"]):
        code, out, _ = cli(*argv)
        recent = out.split("Recent tasks")[1]
        assert code == 0 and "up to 1)" in recent
        listed = [line.split()[0] for line in lines(recent)[2:-1]]
        assert len(listed) == 1 and listed[0] in submitted, argv
    code, out, _ = cli("tasks", "list")
    assert "up to 20)" in out


def test_tasks_json_prints_every_task_once_and_recent_leaves_out_the_unfinished(cli, emu, tmp_path):
    code, out, _ = cli("submit", "a boat", "--count", "2")
    done, waiting = lines(out)
    assert cli("poll", done, "--out", str(tmp_path))[0] == 0
    for argv in (["tasks", "--json"], ["tasks", "list", "--json"]):
        code, out, _ = cli(*argv)
        rows = [json.loads(line) for line in lines(out)]
        # Oldest first; the two were submitted side by side, so either may be first.
        assert code == 0 and sorted(r["task_id"] for r in rows) == sorted([done, waiting]), argv
        assert [r["submitted_at"] for r in rows] == sorted(r["submitted_at"] for r in rows)
        assert list(rows[0])[:6] == ["task_id", "provider", "status", "submitted_at", "base_url", "model"]
        status = {r["task_id"]: (r["provider"], r["status"]) for r in rows}
        assert status == {done: ("qingbo", "completed"), waiting: ("qingbo", "queued")}
        assert rows[0]["base_url"] == emu.url and DEMO_KEY not in out
    code, out, _ = cli("tasks")
    unfinished, recent = out.split("Recent tasks")
    assert waiting in unfinished and done not in unfinished
    assert done in recent and waiting not in recent  # each id is listed once


def test_poll_ctrl_c_names_every_task_not_collected_yet(cli, emu, monkeypatch):
    code, out, _ = cli("submit", "a boat", "--count", "2")
    ids = lines(out)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    code, out, err = cli("poll", *ids, "--out", "pictures", sleep=interrupt)
    assert code == 130 and out == ""
    assert all(task_id in lines(err)[-1] for task_id in ids)


# -- prices ---------------------------------------------------------------------------------------------------------


def test_help_quotes_qingbo_billed_price_and_no_invented_prompt_extend_figure(cli):
    for command in ("batch", "submit"):
        code, out, _ = cli(command, "--help")
        text = " ".join(out.split())
        assert code == 0 and "$0.010626" in text and "does not publish" in text, command
        assert "0.002" not in text and "0.010625" not in text, command


# -- help, emulator, demo -------------------------------------------------------------------------------------------


def test_every_option_of_every_command_is_documented(cli):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        if name == "emulator":
            continue
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        code, out, _ = cli(name, "--help")
        assert code == 0 and "usage: python -m zimage_api " + name in out
        assert sub.epilog is None or "python -m zimage_api" in sub.epilog or name == "demo"
    for name in ("generate", "edit", "submit", "poll", "batch", "tasks", "demo"):
        assert "example" in (commands[name].epilog or ""), name


def test_emulator_command_delegates(cli):
    code, out, _ = cli("emulator", "--port", "0", "--serve-seconds", "0.05")
    assert code == 0 and out.startswith("Z-Image emulator on http://127.0.0.1:")
    code, out, _ = cli("emulator", "--help")
    assert code == 0 and "--process-seconds" in out


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(ZIMAGE_DATA_DIR=str(tmp_path / "user-data"), ZIMAGE_CONFIG=str(tmp_path / "none.ini"),
               PYTHONPATH=str(ROOT))
    return env


def test_demo_in_a_subprocess_writes_four_pictures_without_any_key(tmp_path):
    out_dir = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "zimage_api", "demo", "--out", str(out_dir)], cwd=tmp_path,
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output = lines(done.stdout)
    assert len(output) == 5 and output[-1].startswith("Demo done: 4 placeholder pictures in " + str(out_dir))
    for path in output[:4]:
        Image.open(path).verify()
    assert {Path(p).name.split("_")[0] for p in output[:4]} == {"wavespeed", "wavespeed-edit", "qingbo"}
    assert (out_dir / ".ledger" / "zimage.sqlite3").exists()
    assert not (tmp_path / "user-data").exists(), "the user's ledger was not touched"


def test_help_in_a_subprocess(tmp_path):
    done = subprocess.run([sys.executable, "-m", "zimage_api", "--help"], cwd=tmp_path, env=_clean_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("generate", "edit", "submit", "poll", "batch", "tasks", "emulator", "demo", "exit codes"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "zimage_api", "generate"], cwd=tmp_path, env=_clean_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_the_script_runs_where_the_current_folder_is_not_on_the_path(tmp_path) -> None:
    """ComfyUI's embedded Windows Python ignores the current folder; zimage_cli.py finds the package itself."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "zimage_cli.py"
    done = subprocess.run([sys.executable, "-P", str(script), "tasks", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: " in done.stdout and "tasks" in done.stdout


# -- the rest of the Z-Image family ------------------------------------------------------------------------------------


def _family_files(tmp_path: Path) -> tuple[Path, Path]:
    picture, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.new("RGB", (320, 240), (30, 160, 90)).save(picture)
    painted = Image.new("L", (320, 240), 0)
    painted.paste(255, (0, 0, 160, 120))
    painted.save(mask)
    return picture, mask


def test_cli_reaches_the_lora_inpaint_and_controlnet_models(cli, emu, tmp_path):
    picture, mask = _family_files(tmp_path)
    runs = [
        (["generate", "a fox", "--model", "Z-Image-Turbo", "--lora", "owner/film-grain:0.5", "--lora",
          "https://example.test/ink.safetensors", "--width", "256", "--height", "256", "--seed", "1"],
         "/api/v3/wavespeed-ai/z-image/turbo-lora",
         {"loras": [{"path": "owner/film-grain", "scale": 0.5},
                    {"path": "https://example.test/ink.safetensors", "scale": 1.0}]}),
        (["edit", str(picture), "a plant", "--mask", str(mask), "--seed", "2"],
         "/api/v3/wavespeed-ai/z-image/turbo-inpaint", {"size": "336*256"}),
        (["generate", "a house", "--control", str(picture), "--mode", "none", "--strength", "0.7", "--seed", "3"],
         "/api/v3/wavespeed-ai/z-image-turbo/controlnet", {"mode": "none", "strength": 0.7, "size": "336*256"}),
        (["edit", str(picture), "in winter", "--api", "v3", "--model", "Z-Image-Turbo", "--strength", "0.9",
          "--seed", "4"], "/api/v3/wavespeed-ai/z-image-turbo/image-to-image", {"strength": 0.1}),
    ]
    for argv, path, fields in runs:
        since = len(emu.requests)
        code, out, err = cli(*argv, "--out", str(tmp_path / "out"))
        assert code == 0, err
        submits = [r for r in emu.requests[since:] if r.path.startswith("/api/v3/wavespeed-ai/")]
        assert [r.path for r in submits] == [path]
        assert submits[0].json.items() >= fields.items()
        saved = Path(lines(out)[0])
        assert Image.open(saved).size[0] > 0
    inpaint_mask = emu.requests_to("POST /api/v3/media/upload/binary")[-3].files["file"][1]
    assert Image.open(io.BytesIO(inpaint_mask)).getpixel((10, 10)) == 255  # white where the mask file is white


@pytest.mark.parametrize("argv, message", [
    (["generate", "a fox", "--api", "v1/images", "--lora", "owner/name:1"], "--lora runs on WaveSpeed v3"),
    (["generate", "a fox", "--lora", "a:1", "--lora", "b/c"], "is neither a Hugging Face repo id"),
    (["generate", "a fox", "--lora", "owner/name:9"], "The LoRA scale 9.0 is outside 0-4"),
    (["generate", "a fox"] + ["--lora", "owner/name"] * 4, "4 LoRAs are chained"),
    (["generate", "a fox", "--mode", "canny"], "--mode goes with --control FILE"),
    (["generate", "a fox", "--control", "{picture}", "--api", "v1/images"], "--mask and --control run on WaveSpeed v3"),
    (["generate", "a fox", "--control", "{picture}", "--model", "Z-Image-Base"], "ControlNet runs on WaveSpeed v3 "
                                                                                 "with Z-Image-Turbo only"),
    (["edit", "{picture}", "a plant", "--mask", "{mask}", "--strength", "0.5"], "--strength does not apply"),
    (["edit", "{picture}", "a plant", "--mask", "{picture}.missing"], "Cannot read the mask picture"),
])
def test_cli_refuses_bad_family_input_before_anything_is_sent(cli, emu, tmp_path, argv, message):
    picture, mask = _family_files(tmp_path)
    argv = [a.replace("{picture}", str(picture)).replace("{mask}", str(mask)) for a in argv]
    code, _out, err = cli(*argv, "--out", str(tmp_path / "out"))
    assert code == 2 and message in err, err
    assert emu.requests == []


def test_batch_dry_run_prices_every_model(cli, emu, tmp_path):
    picture, mask = _family_files(tmp_path)
    rows = [
        {"prompt": "a", "model": "Z-Image-Turbo", "provider": "wavespeed-v3", "size": "256x256", "seed": 1},
        {"prompt": "b", "model": "Z-Image-Base", "loras": "owner/x:1", "size": "256x256", "seed": 1},
        {"prompt": "c", "model": "Z-Image-Turbo", "reference": "photo.png", "provider": "wavespeed-v3", "seed": 1},
        {"prompt": "d", "reference": "photo.png", "mask": "mask.png", "seed": 1},
        {"prompt": "e", "reference": "photo.png", "mask": "mask.png", "seed": 2},
        {"prompt": "f", "control": "photo.png", "mode": "pose", "seed": 1},
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    code, out, err = cli("batch", str(jobs), "--dry-run", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert emu.requests == []
    for line in ("    wavespeed-ai/z-image/turbo: 1 x about $0.01 (not published) = ~$0.0100",
                 "    wavespeed-ai/z-image/base-lora: 1 x $0.012 = ~$0.0120",
                 "    wavespeed-ai/z-image-turbo/image-to-image: 1 x $0.005 = ~$0.0050",
                 "    wavespeed-ai/z-image/turbo-inpaint: 2 x $0.02 = ~$0.0400",
                 "    wavespeed-ai/z-image-turbo/controlnet: 1 x $0.012 = ~$0.0120"):
        assert line in out, out
    assert "estimated cost: about $0.0790" in out


def test_batch_refuses_bad_family_rows_by_number(cli, emu, tmp_path):
    _family_files(tmp_path)
    rows = [
        {"prompt": "a", "provider": "wavespeed-images", "loras": "owner/x:1"},
        {"prompt": "b", "loras": [{"path": "owner/x", "scale": 1}] * 4},
        {"prompt": "c", "mask": "mask.png"},
        {"prompt": "d", "control": "photo.png", "mode": "edges"},
        {"prompt": "e", "mode": "depth"},
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    code, _out, err = cli("batch", str(jobs), "--dry-run", "--out", str(tmp_path / "out"))
    assert code == 2 and emu.requests == []
    for row, message in ((1, "wavespeed-images does not take loras"), (2, "4 LoRAs are chained"),
                         (3, "The mask needs a reference picture"), (4, "The mode 'edges' is not one of"),
                         (5, "The mode goes with a control picture")):
        assert f"row {row}: {message}" in err, err
