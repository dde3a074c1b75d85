"""Every check that runs before a request: the field is named and the allowed range is given."""

from __future__ import annotations

import math

import pytest

from zimage_api.errors import ValidationError
from zimage_api.validation import (
    ASPECT_RATIOS,
    IMAGES_SIZE,
    V3_SIZE,
    check_choice,
    check_count,
    check_number,
    check_prompt,
    check_seed,
    check_size,
    check_task_id,
    split_task_ids,
)


@pytest.mark.parametrize(
    ("prompt", "limit", "message"),
    [
        ("", None, "The prompt is empty"),
        ("   \n\t", None, "The prompt is empty"),
        ("x" * 801, 800, "The prompt has 801 characters; Qingbo rejects more than 800. Shorten it by 1."),
        (None, None, "The prompt must be text, not NoneType."),
    ],
)
def test_bad_prompts(prompt: object, limit: int | None, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_prompt(prompt, limit=limit, provider="Qingbo")
    assert message in str(info.value)
    assert info.value.field == "prompt"


def test_prompt_at_the_limit_passes() -> None:
    assert check_prompt("y" * 800, limit=800) == "y" * 800


@pytest.mark.parametrize(
    ("width", "height", "limits", "field", "message"),
    [
        (255, 1024, IMAGES_SIZE, "width", "The width 255 is outside 256-2048 pixels, the range of the /v1/images API."),
        (1024, 2049, IMAGES_SIZE, "height", "The height 2049 is outside 256-2048"),
        (2048, 1600, V3_SIZE, "size", "The width 2048 and the height 1600 are outside 256-1536 pixels, the range of "
                                      "WaveSpeed v3."),
        (2048, 1024, V3_SIZE, "width", "The width 2048 is outside 256-1536 pixels, the range of WaveSpeed v3."),
        (1024.5, 1024, IMAGES_SIZE, "width", "The width must be a whole number of pixels, not 1024.5."),
        ("1024", 1024, IMAGES_SIZE, "width", "whole number"),
        (float("nan"), 1024, IMAGES_SIZE, "width", "whole number"),
    ],
)
def test_bad_sizes(width: object, height: object, limits, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_size(width, height, limits)
    assert message in str(info.value)
    assert info.value.field == field


def test_area_cap() -> None:
    from dataclasses import replace

    small = replace(IMAGES_SIZE, max_area=1024 * 1024)
    with pytest.raises(ValidationError, match=r"2048x1024 is 2,097,152 pixels.*at most 1024x1024"):
        check_size(2048, 1024, small)
    assert check_size(1024.0, 768, IMAGES_SIZE) == (1024, 768)


@pytest.mark.parametrize("value", [-0.1, 20.5, math.nan, math.inf, "7", None, True])
def test_guidance_out_of_range(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        check_number(value, "guidance_scale", 0, 20)
    assert "guidance_scale" in str(info.value)


@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan])
def test_strength_out_of_range(value: float) -> None:
    with pytest.raises(ValidationError, match=r"The strength .* is outside 0-1"):
        check_number(value, "strength", 0, 1)


def test_enums() -> None:
    assert check_choice("1k", "resolution", ("1K", "2K"), case_insensitive=True) == "1K"
    with pytest.raises(ValidationError, match="The aspect_ratio '5:4' is not one of 1:1, 4:3"):
        check_choice("5:4", "aspect_ratio", ASPECT_RATIOS)
    with pytest.raises(ValidationError, match="resolution '4K'"):
        check_choice("4K", "resolution", ("1K", "2K"), case_insensitive=True)


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("", "The task id is empty"),
        ("   ", "The task id is empty"),
        ("task/../../etc", "is not a valid"),
        ("a/b", "is not a valid"),
        ("..", "is not a valid"),
        ("task 1", "is not a valid"),
        ("task\x00x", "is not a valid"),
        ("task\nx", "is not a valid"),
        ("t" * 129, "has 129 characters; ids have at most 128"),
        (42, "must be text"),
    ],
)
def test_bad_task_ids(task_id: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_task_id(task_id, provider="Qingbo")
    assert message in str(info.value)
    assert "\x00" not in str(info.value) and "\n" not in str(info.value)


def test_good_task_ids() -> None:
    assert check_task_id(" task-wave177528516b9\n") == "task-wave177528516b9"
    assert check_task_id("0f3a9c2e4b") == "0f3a9c2e4b"
    assert split_task_ids("a-1\nb-2, a-1  c-3") == ["a-1", "b-2", "c-3"]


def test_seed_and_count() -> None:
    assert check_seed(None) is None and check_seed(-1) is None and check_seed(0) == 0
    with pytest.raises(ValidationError, match="seed"):
        check_seed(-5)
    with pytest.raises(ValidationError, match="seed"):
        check_seed(1.5)
    assert check_count(8) == 8
    with pytest.raises(ValidationError, match="The count 9 is outside 1-8"):
        check_count(9)
