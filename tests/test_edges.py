"""The edges of the command line, exactly as a user meets them: keys with control characters, credentials in a base
URL, escape sequences from a server, task ids no server could mean, bad provider JSON, broken CSV files and prompts
too long to be anything but a mistake. Each is refused or shown safely, and nothing is sent that should not be."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import lines
from zimage_api.catalog import WAVESPEED_PROMPT_LIMIT
from zimage_api.config import WAVESPEED, resolve_api_key
from zimage_api.errors import ConfigError, InvalidTaskIdError, ValidationError
from zimage_api.ledger import Ledger
from zimage_api.logs import mask_url, printable, redact
from zimage_api.orders import Edit, Reference, TextToImage
from zimage_api.validation import check_server_task_id

Result = tuple[int, str, str]
SMALL = ("--width", "256", "--height", "256")



# -- keys with control characters -----------------------------------------------------------------------------------

LINE_BREAK_KEY = "sk-live-0123456789\r\nabcdefghij"


@pytest.mark.parametrize("key, hint", [(LINE_BREAK_KEY, " (a line break?)"), ("sk-live-0123\n4567", " (a line break?)"),
                                       ("sk-live-0123\t456789", ""), ("sk-live-0123\x7f456789", ""),
                                       ("sk-live-0123\x85456789", ""), ("sk-live-0123\x1b456789", "")])
def test_a_key_with_a_control_character_is_refused_before_sending_and_never_echoed(cli, emu, monkeypatch, key, hint):
    monkeypatch.setenv("WAVESPEED_API_KEY", key)
    code, out, err = cli("generate", "a fox", *SMALL, "-v")
    assert code == 2 and out == ""
    assert lines(err)[-1] == (f"error: The WaveSpeed API key in WAVESPEED_API_KEY contains a control "
                              f"character{hint}; paste it again without it.")
    for part in {key, *key.split("\r\n"), *key.split("\n"), *key.split("\t"), "0123456789", "456789", "abcdefghij"}:
        assert part not in err
    assert emu.requests == []


def test_a_key_in_the_config_file_is_named_by_its_place(cli, emu, monkeypatch, tmp_path):
    monkeypatch.delenv("WAVESPEED_API_KEY")
    config = tmp_path / "zimage.ini"
    config.write_bytes(b"[wavespeed]\napi_key = sk-live-0123\x00456789\n")
    monkeypatch.setenv("ZIMAGE_CONFIG", str(config))
    code, out, err = cli("generate", "a fox", *SMALL)
    assert (code, lines(err)) == (2, [f"error: The WaveSpeed API key under [wavespeed] in {config} contains a control "
                                      "character; paste it again without it."])
    assert "456789" not in err and emu.requests == []
    with pytest.raises(ConfigError, match=r"^The WaveSpeed API key given contains a control character \(a line "
                                          r"break\?\); paste it again without it\.$"):
        resolve_api_key(WAVESPEED, "sk-live-01\n23456789")
    assert resolve_api_key(WAVESPEED, "  sk-live-0123456789\r\n") == "sk-live-0123456789"  # pasted with its newline


# -- credentials in a base URL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, shown", [
    ("https://user:s3cret@api.example.com/v1", "https://***@api.example.com/v1"),
    ("http://token@127.0.0.1:8080", "http://***@127.0.0.1:8080"),
    ("https://api.example.com/v1?next=a@b", "https://api.example.com/v1?next=a@b"),
    ("Could not connect to https://u:p@h.example (refused) or http://h2", "Could not connect to https://***@h.example "
                                                                          "(refused) or http://h2"),
    ("no url here: mail@example.com", "no url here: mail@example.com"),
])
def test_mask_url_hides_credentials_and_nothing_else(text, shown):
    assert mask_url(text) == shown
    assert redact(text) == shown


def test_a_base_url_with_credentials_is_shown_masked(cli, emu, monkeypatch, busy_port):
    monkeypatch.setenv("WAVESPEED_BASE_URL", f"http://artist:s3cret-pass@127.0.0.1:{busy_port}")
    code, out, err = cli("generate", "a fox", *SMALL)
    assert code == 1 and "s3cret-pass" not in err and "artist" not in err
    assert lines(err)[-1] == (f"error: Could not connect to WaveSpeed at http://***@127.0.0.1:{busy_port} (connection "
                              "refused); check the network, proxy settings or WAVESPEED_BASE_URL. Nothing was sent.")


@pytest.fixture
def busy_port() -> int:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        return holder.getsockname()[1]  # closed again: connecting is refused


# -- what a server says is printed safely ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, limit, shown", [
    ("task-1", 200, "task-1"),
    ("\x1b[31mred\x1b[0m", 200, "red"),
    ("a\r\nb\tc\x00d\x7fe\x85f", 200, "a b c d e f"),
    ("\x1b]0;title\x07after", 200, "after"),
    ("\x1b[2J\x1b[Hcleared", 200, "cleared"),
    ("x" * 300, 10, "xxxxxxxxx\u2026"),
    ("caf\u00e9 \u732b", 200, "caf\u00e9 \u732b"),
])
def test_printable_strips_escapes_and_controls_and_cuts_long_text(text, limit, shown):
    assert printable(text, limit) == shown


def test_a_provider_message_with_escape_sequences_is_printed_plain(cli, emu):
    emu.inject("POST /v1/images/generations", "status", status=400,
               body={"error": {"message": "bad \x1b[31mprompt\x1b[0m\r\nsee \x1b]8;;http://x\x07here\x07",
                               "code": "x"}})
    code, out, err = cli("generate", "a fox", *SMALL)
    assert (code, out, lines(err)) == (1, "", ["error: WaveSpeed rejected the request (HTTP 400: bad prompt see "
                                               "here )."])
    assert "\x1b" not in err and "\x07" not in err


def test_the_task_list_prints_ids_without_escape_sequences(cli, emu):
    Ledger().record_submitted("task-\x1b[2Jwave1", provider="qingbo", model="z-image-turbo", prompt_sha256="0",
                              params={})
    code, out, err = cli("tasks")
    assert code == 0 and "\x1b" not in out
    assert "  task-wave1" in out


# -- task ids no server could mean ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id, reason, shown", [
    ("task/../x", "it contains a path separator", "task/../x"),
    ("task\x00x", "it contains a control character", "task?x"),
    ("task 1", "it contains blanks", "task 1"),
    ("t" * 5000, "it has 5,000 characters; ids have at most 128", "t" * 40 + "..."),
    ("", "it is empty", ""),
    ("task#1", "only letters, digits, '-', '_', '.' and ':' are allowed", "task#1"),
])
def test_a_malformed_server_task_id_is_a_typed_error(task_id, reason, shown):
    with pytest.raises(InvalidTaskIdError) as caught:
        check_server_task_id(task_id, provider="Qingbo")
    assert str(caught.value) == f"Qingbo gave the task id '{shown}', which cannot be collected ({reason})."
    assert caught.value.task_id == shown
    assert check_server_task_id("task-wave1780000000abc", provider="Qingbo") == "task-wave1780000000abc"


def test_tasks_resume_reports_malformed_ids_marks_them_and_collects_the_others(cli, emu, tmp_path):
    code, out, _ = cli("submit", "a paper boat")
    [good] = lines(out)
    bad = ["task/../x", "task\x00x", "t" * 5000]
    for task_id in bad:
        Ledger().record_submitted(task_id, provider="qingbo", model="z-image-turbo", prompt_sha256="0", params={})
    code, out, err = cli("tasks", "resume", "--out", str(tmp_path / "out"))
    end = (" It is marked failed in the ledger and no longer listed as unfinished; check the provider's dashboard for "
           "its picture.")
    assert code == 1
    assert lines(err) == [
        "error: Qingbo gave the task id 'task/../x', which cannot be collected (it contains a path separator)." + end,
        "error: Qingbo gave the task id 'task?x', which cannot be collected (it contains a control character)." + end,
        f"error: Qingbo gave the task id '{'t' * 40}...', which cannot be collected (it has 5,000 characters; ids "
        "have at most 128)." + end,
        "nothing charged now (paid at submit)",
        "error: 3 unfinished tasks had an id that cannot be collected (see above)."]
    [path] = lines(out)
    assert Path(path).name.startswith(f"qingbo_{good}_")
    assert [r.path for r in emu.requests_to("GET /v1/tasks/*")] == [f"/v1/tasks/{good}"] * len(
        emu.requests_to("GET /v1/tasks/*"))
    assert {Ledger().get(task_id)["status"] for task_id in bad} == {"failed"}
    code, out, err = cli("tasks", "resume", "--out", str(tmp_path / "out"))
    assert (code, out, lines(err)) == (0, "", ["No unfinished tasks in the ledger; nothing to collect."])
    code, out, _ = cli("tasks")
    assert code == 0 and "No unfinished tasks." in out


def test_a_malformed_id_in_a_submit_answer_is_a_failed_job_not_bad_usage(cli, emu):
    emu.inject("POST /v1/tasks", "status", status=200, body={"task_id": "task/../etc", "status": "queued"})
    code, out, err = cli("submit", "a paper boat")
    assert (code, out) == (1, "")
    assert lines(err) == [
        "paid $0.0106 for 1 task (refunded if it fails)",
        "error: Qingbo gave the task id 'task/../etc', which cannot be collected (it contains a path separator). It "
        "is marked failed in the ledger and no longer listed as unfinished; check the provider's dashboard for its "
        "picture."]
    assert Ledger().unfinished() == []
    emu.inject("POST /api/v3/wavespeed-ai/*", "status", status=200,
               body={"code": 200, "message": "success", "data": {"id": "a/b", "status": "created"}})
    code, out, err = cli("generate", "a kite", "--api", "v3", *SMALL)
    assert (code, out, lines(err)) == (1, "", [
        "error: The task id 'a/b' is not a valid WaveSpeed task id (letters, digits, '-', '_', '.', ':' only). The "
        "server gave it for a paid request; check the provider's dashboard for its picture."])


# -- bad provider JSON: one typed line, never a traceback -----------------------------------------------------------


@pytest.mark.parametrize("pattern, fault, params, argv, message", [
    ("POST /v1/images/generations", "malformed_json", {}, ("generate", "a fox", *SMALL),
     "WaveSpeed answered HTTP 200 with cut-off or malformed JSON instead of the expected JSON; the service may be "
     "having trouble, try again shortly."),
    ("POST /v1/images/generations", "status", {"status": 200, "body": {"data": [{"b64_json": 12}]}},
     ("generate", "a fox", *SMALL), "WaveSpeed answered a picture entry with neither 'b64_json' nor 'url'."),
    ("POST /v1/images/generations", "status", {"status": 200, "body": [1, 2]}, ("generate", "a fox", *SMALL),
     "WaveSpeed answered without any picture (no 'data' list); nothing was decoded."),
    ("POST /api/v3/wavespeed-ai/*", "status", {"status": 200, "body": {"code": 200, "data": None}},
     ("generate", "a fox", "--api", "v3", *SMALL), "WaveSpeed answered without a prediction id."),
    ("POST /v1/tasks", "malformed_json", {}, ("submit", "a boat"),
     "Qingbo answered HTTP 200 with cut-off or malformed JSON instead of the expected JSON; the service may be "
     "having trouble, try again shortly."),
])
def test_bad_provider_json_is_one_typed_line_with_exit_1(cli, emu, pattern, fault, params, argv, message):
    emu.inject(pattern, fault, times=10, **params)
    code, out, err = cli(*argv)
    assert (code, out, lines(err)) == (1, "", [f"error: {message}"])
    code, out, err = cli(*argv, "--verbose")
    assert code == 1 and lines(err)[-1] == f"error: {message}" and "unexpected" not in err


# -- batch files that are not what they seem ------------------------------------------------------------------------


@pytest.mark.parametrize("name, text, message", [
    ("open.csv", 'prompt,seed\n"a fox,1\na kite,2\n',
     "error: The batch file open.csv has a double quote on line 2 that is not closed on that line, so the rows run "
     'together up to the end of the file; close the quote, or write a quote inside a value as two (""). Nothing was '
     "sent."),
    ("runaway.csv", 'prompt,seed\na fox,1\n"a kite,2\na boat,3\n"a bell",4\n',
     "error: The batch file runaway.csv has a double quote on line 3 that is not closed on that line, so the rows "
     'run together up to line 5; close the quote, or write a quote inside a value as two (""). Nothing was sent.'),
    ("merged.csv", 'prompt,seed\n"a fox,1\na kite",2\na boat,3\n',
     "error: The batch file merged.csv has a double quote on line 2 that is not closed on that line, so the rows "
     'run together up to line 3; close the quote, or write a quote inside a value as two (""). Nothing was sent.'),
    ("semi.csv", "prompt;seed\na fox;1\na kite, in snow;2\n",
     "error: semi.csv looks separated by ';': save it as comma-separated (in Excel: CSV UTF-8)."),
    ("tabs.csv", "prompt\tseed\na fox\t1\n",
     "error: tabs.csv looks separated by tabs: save it as comma-separated (in Excel: CSV UTF-8), or give it the .tsv "
     "extension."),
    ("wide.csv", "prompt,seed\na fox,1,2\n",
     "error: row 1 (line 2): The row has 3 values for 2 columns; put a prompt that contains a comma in double "
     'quotes, e.g. "a fox,1".'),
])
def test_a_broken_csv_is_an_error_naming_its_line(cli, emu, tmp_path, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    code, out, err = cli("batch", name, "--dry-run")
    assert (code, out, lines(err)[0]) == (2, "", message)
    assert emu.requests == []


def test_quoted_commas_and_doubled_quotes_still_read(cli, emu, tmp_path):
    (tmp_path / "ok.csv").write_text('prompt,seed\n"a fox, in ""snow""",1\n\na kite;at dusk,2\n', encoding="utf-8")
    code, out, err = cli("batch", "ok.csv", "--dry-run")
    assert code == 0, err
    assert lines(out)[0] == ("batch ok.csv: 2 rows: 0 done earlier (skipped), 0 submitted earlier (to collect, already "
                             "paid), 2 to run")


# -- prompts too long to be meant -------------------------------------------------------------------------------------


def _too_long(over: int = 1) -> str:
    n = WAVESPEED_PROMPT_LIMIT + over
    return (f"has {n:,} characters; the limit for WaveSpeed is {WAVESPEED_PROMPT_LIMIT:,} (it documents none, "
            f"and a longer text, likely pasted by mistake, would be sent and billed). Shorten it by {over:,}.")


def test_the_wavespeed_prompt_limit_is_checked_in_the_order():
    assert WAVESPEED_PROMPT_LIMIT == 4000
    assert TextToImage(prompt="x" * WAVESPEED_PROMPT_LIMIT).prompt == "x" * 4000
    with pytest.raises(ValidationError) as caught:
        TextToImage(prompt="x" * 4321)
    assert (str(caught.value), caught.value.field) == ("The prompt " + _too_long(321), "prompt")
    with pytest.raises(ValidationError) as caught:
        TextToImage(prompt="a fox", negative_prompt="y" * 4001)
    assert (str(caught.value), caught.value.field) == ("The negative_prompt " + _too_long(),
                                                       "negative_prompt")
    reference = Reference((b"png", "ref.png", "image/png"), (512, 512))
    with pytest.raises(ValidationError, match="^The prompt has 4,001 characters"):
        Edit(prompt="x" * 4001, references=(reference,))


def test_a_too_long_prompt_is_refused_by_every_command_before_anything_is_sent(cli, emu, tmp_path):
    code, out, err = cli("generate", "x" * 4001, *SMALL)
    assert (code, out, lines(err)) == (2, "", ["error: The prompt " + _too_long()])
    code, out, err = cli("generate", "a fox", "--negative", "n" * 4002, "--api", "v3", *SMALL)
    assert (code, out, lines(err)) == (2, "", ["error: --negative " + _too_long(2)])
    (tmp_path / "long.csv").write_text(f"prompt,seed\n{'x' * 4001},1\n", encoding="utf-8")
    code, out, err = cli("batch", "long.csv", "--dry-run")
    assert code == 2 and lines(err)[0] == "error: row 1 (line 2): The prompt " + _too_long()
    code, out, err = cli("submit", "x" * 801)
    assert (code, lines(err)) == (2, ["error: The prompt has 801 characters; Qingbo rejects more than 800. Shorten it "
                                      "by 1."])
    assert emu.requests == []
