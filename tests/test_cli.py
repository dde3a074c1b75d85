"""The command line end to end against the emulator: files written, pixels, requests sent, resume, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zimage_api.cli import build_parser, run
from zimage_api.emulator import DEMO_KEY, Emulator
from zimage_api.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
Result = tuple[int, str, str]


@pytest.fixture
def cli(clock, capsys, tmp_path, monkeypatch) -> Callable[..., Result]:
    """Run the CLI in-process with the fake clock, in tmp_path; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)  # the default --out is the current folder

    def invoke(*argv: str, sleep: Callable[[float], None] | None = None) -> Result:
        code = run(list(argv), sleep=sleep or clock.sleep, clock=clock)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def posts(emu: Emulator, pattern: str = "POST *") -> int:
    return len(emu.requests_to(pattern))


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
    assert [Path(p).name[-12:] for p in paths] == ["random_0.png", "random_1.png"]
    assert [Path(p).read_bytes() for p in paths] == emu.served_images
    assert len(emu.requests_to("GET /files/*")) == 2
    assert emu.requests_to("POST /v1/images/generations")[0].json["n"] == 2


def test_generate_v3_polls_with_the_fake_clock_and_records_the_ledger(cli, emu, clock, tmp_path):
    code, out, err = cli("generate", "a lighthouse", "--api", "v3", "--seed", "5", "--count", "2", "--width", "512",
                         "--height", "512", "--out", str(tmp_path))
    assert code == 0, err
    paths = lines(out)
    submits = emu.requests_to("POST /api/v3/wavespeed-ai/z-image/base")
    assert [r.json["seed"] for r in submits] == [5, 6]
    assert submits[0].json["size"] == "512*512"
    ids = [t.id for t in emu.tasks.values()]
    assert [Path(p).name for p in paths] == [f"wavespeed_{ids[0]}_5_0.png", f"wavespeed_{ids[1]}_6_0.png"]
    for path, task_id in zip(paths, ids):
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
    assert submit.json["image"].startswith(emu.url + "/files/") and submit.json["strength"] == 0.6
    assert submit.json["size"] == "600*400"
    [path] = lines(out)
    assert path.endswith(".jpg") and Path(path).read_bytes() == emu.served_images[-1]


# -- submit / poll --------------------------------------------------------------------------------------------------


def test_submit_prints_ids_and_poll_collects_them_without_resubmitting(cli, emu, tmp_path, monkeypatch):
    code, out, err = cli("submit", "a paper boat", "--aspect-ratio", "16:9", "--seed", "10", "--count", "2")
    assert code == 0, err
    ids = lines(out)
    assert ids == list(emu.tasks)
    bodies = [r.json for r in emu.requests_to("POST /v1/tasks")]
    assert [b["seed"] for b in bodies] == [10, 11]
    assert all(set(b) == {"model", "action", "prompt", "aspect_ratio", "resolution", "seed"} for b in bodies)
    assert all(r.headers.get("idempotency-key") for r in emu.requests_to("POST /v1/tasks"))

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(ids) + "\n"))
    code, out, err = cli("poll", "-", "--out", str(tmp_path))
    assert code == 0, err
    paths = lines(out)
    assert [Path(p).name for p in paths] == [f"qingbo_{ids[0]}_10_0.jpg", f"qingbo_{ids[1]}_11_0.jpg"]
    for path, task_id in zip(paths, ids):
        assert pixels(Path(path).read_bytes()).tolist() == pixels(emu.tasks[task_id].outputs[0]).tolist()
    assert posts(emu, "POST /v1/tasks") == 2


def test_poll_wavespeed_prediction_by_id(cli, emu, tmp_path):
    from zimage_api.wavespeed_v3 import WaveSpeedClient

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
    (["generate", "x", "--cfg", "25"], "guidance_scale 25.0 is outside 0-20"),
    (["generate", "x", "--width", "100", "--height", "512"], "width 100 is outside 256-2048"),
    (["generate", "x", "--api", "v3", "--width", "2048", "--height", "1024"], "256-1536"),
    (["generate", "x", "--api", "v3", "--cfg", "7"], "--cfg is not part of WaveSpeed's v3 API"),
    (["generate", "  "], "prompt is empty"),
    (["submit", "y" * 801], "801 characters"),
    (["submit", "x", "--count", "9"], "count 9 is outside 1-8"),
    (["poll", "../etc/passwd"], "not a valid Qingbo task id"),
    (["edit", "missing.png", "x"], "Cannot read the reference picture"),
    (["generate", "x", "--width", "512"], "both --width and --height"),
    (["generate"], "required: PROMPT"),
    (["generate", "x", "--seed", "abc"], "invalid seed"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_usage_exits_2_with_one_line_and_sends_nothing(cli, emu, argv, message):
    code, out, err = cli(*argv)
    assert code == 2
    assert len(lines(err)) == 1 and err.startswith("error: ") and message in err
    assert emu.requests == []


@pytest.mark.parametrize("extra, message", [
    (["", "--api", "v3"], "prompt is empty"),
    (["x", "--api", "v3", "--strength", "1.5"], "strength 1.5 is outside 0-1"),
    (["x", "--strength", "-0.1"], "strength -0.1 is outside 0-1"),
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
    assert posts(emu, "POST /api/v3/*") == 1
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
    assert sorted(Path(p).read_bytes() for p in paths) == sorted(emu.served_images)
    assert "batch [" in err and "5 of 5 done" in err
    state = manifest(out_dir)
    assert len(state) == 5 and {r["status"] for r in state.values()} == {"done"}
    qingbo = [r for r in state.values() if r["provider"] == "qingbo"]
    assert {r["cost_usd"] for r in qingbo} == {0.010626} and not qingbo[0]["cost_estimated"]
    assert all(r["task_id"] in emu.tasks for r in qingbo) and qingbo[0]["task_id"] != qingbo[1]["task_id"]
    edit = next(r for r in state.values() if r["params"].get("reference"))
    assert edit["params"]["strength"] == 0.4 and edit["cost_estimated"]
    [edit_request] = emu.requests_to("POST /v1/images/edits")
    assert Image.open(io.BytesIO(edit_request.files["image"][1])).size == (1024, 683)
    assert all(r["prompt_sha256"] and r["paths"] for r in state.values())

    before = posts(emu)
    code, out, err = cli("batch", str(jobs), "--concurrency", "3", "--out", str(out_dir))
    assert code == 0 and out == "" and "5 of 5 done (5 earlier)" in err
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
    assert posts(emu, "POST /v1/tasks") == 1 and posts(emu, "POST /api/v3/*") == 1
    assert sorted(Path(p).read_bytes() for p in lines(out)) == sorted(t.outputs[0] for t in emu.tasks.values())


def test_batch_dry_run_sends_nothing_and_estimates_the_cost(cli, emu, tmp_path):
    rows = batch_rows(tmp_path) + [{"prompt": "extended", "provider": "qingbo", "prompt_extend": True}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    code, out, err = cli("batch", str(jobs), "--dry-run", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert emu.requests == []
    assert "6 rows: 0 done earlier" in out and "6 to run" in out
    assert "  qingbo            3 pictures    $0.0339  ($0.010625 each" in out
    assert "  wavespeed-images  2 pictures    ~$0.0200 (estimate" in out
    assert "  wavespeed-v3      1 picture     ~$0.0100 (estimate" in out
    assert "estimated cost: $0.0639" in out
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
            "error: row 2 (line 4): The guidance_scale 25.0 is outside 0-20.",
            "error: row 3 (line 5): The prompt is empty; describe the picture you want.",
            "error: row 4 (line 6): The aspect_ratio '5:4' is not one of 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3.",
            "error: row 5 (line 7): The width 2048 is outside 256-1536 pixels, the range of WaveSpeed v3.",
            "error: row 6 (line 8): The seed must be a whole number, not 'abc'.",
            "error: row 7 (line 9): qingbo does not take size; it takes prompt, aspect_ratio, resolution, "
            "prompt_extend and seed.",
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
    assert posts(emu, "POST /v1/tasks") == 2 and len(lines(out)) == 1
    assert posts(emu, "POST /v1/images/generations") == 1


def test_batch_row_whose_result_expired_gets_a_new_task_on_the_next_run(cli, emu, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a kite", "provider": "wavespeed-v3",
                                                 "size": "256x256"}])
    emu.inject("GET /files/*", "expired")
    code, _, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 1 and "expired" in err
    [record] = manifest(tmp_path / "out").values()
    assert record["status"] == "failed" and record["task_id"]
    code, out, err = cli("batch", str(jobs), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert posts(emu, "POST /api/v3/*") == 2 and len(lines(out)) == 1


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
    assert len(output) == 5 and output[-1].startswith("Demo done: 4 pictures in " + str(out_dir))
    for path in output[:4]:
        Image.open(path).verify()
    assert {Path(p).name.split("_")[0] for p in output[:4]} == {"wavespeed", "wavespeed-edit", "qingbo"}
    assert (out_dir / ".ledger" / "ledger.jsonl").exists()
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
