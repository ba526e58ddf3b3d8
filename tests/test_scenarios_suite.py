"""Scenario suites: the built-in prompts and labelled sets read from TSV and JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelroute import ValidationError
from pixelroute.scenarios import builtin_suite, load_suite
from pixelroute.scenarios.scorers import Review, levenshtein, parse_review, text_metrics
from pixelroute.scenarios.suite import quoted_text, slug


def test_builtin_suite_has_the_four_scenarios_and_a_control_set() -> None:
    suite = builtin_suite()
    assert [s.name for s in suite.scenarios] == [
        "typography",
        "occlusion",
        "reflection",
        "counting",
        "control",
    ]
    for scenario in suite.scenarios:
        assert len(scenario.prompts) >= 5, scenario.name
        assert len({p.prompt for p in scenario.prompts}) == len(scenario.prompts), scenario.name
    typography = suite.scenarios[0]
    assert "ocr" in typography.scorers
    # every typography prompt says exactly which text the OCR check expects, and it is quoted in the prompt
    for p in typography.prompts:
        assert p.expect_text and quoted_text(p.prompt) == p.expect_text


def test_limited_and_select_keep_order_and_refuse_unknown_names() -> None:
    suite = builtin_suite().select(["counting", "typography"]).limited(2)
    assert [s.name for s in suite.scenarios] == ["typography", "counting"]
    assert all(len(s.prompts) == 2 for s in suite.scenarios)
    with pytest.raises(ValidationError, match="`scenarios`.*'glare'"):
        builtin_suite().select(["glare"])
    with pytest.raises(ValidationError, match="`max_per_scenario` must be at least 1 but is 0"):
        builtin_suite().limited(0)


def test_tsv_with_partiprompts_columns(tmp_path: Path) -> None:
    path = tmp_path / "set.tsv"
    path.write_text(
        "Prompt\tCategory\tChallenge\tNote\n"
        'a sign that says "hello"\tArtifacts\tWriting & Symbols\t\n'
        "two dogs\tAnimals\tQuantity\t\n"
        "a cat\tAnimals\tBasic\t\n"
        "a storefront with 'BAKERY' written on it\tOutdoor Scenes\tWriting & Symbols\t\n",
        encoding="utf-8",
    )
    suite = load_suite(path)
    assert suite.name == "set"
    assert [s.name for s in suite.scenarios] == ["typography", "counting", "basic"]
    typo = suite.scenarios[0]
    assert [p.expect_text for p in typo.prompts] == ["hello", "BAKERY"]
    assert typo.scorers == ("ocr", "clip") and suite.scenarios[2].scorers == ("clip",)


def test_the_real_partiprompts_file_loads(shared_dir: Path) -> None:
    suite = load_suite(shared_dir / "data" / "prompts" / "partiprompts" / "PartiPrompts.tsv")
    by_name = {s.name: s for s in suite.scenarios}
    assert len(by_name["typography"].prompts) == 91  # "Writing & Symbols" per INDEX.md
    assert sum(len(s.prompts) for s in suite.scenarios) == 1632
    assert sum(p.expect_text is not None for p in by_name["typography"].prompts) > 30


def test_jsonl_suite_and_its_errors_name_the_line(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text(
        json.dumps({"prompt": "a mirror", "scenario": "Reflection"})
        + "\n\n"
        + json.dumps({"prompt": "3 cups", "scenario": "counting", "extra": 1})
        + "\n"
    )
    suite = load_suite(good)
    assert [(s.name, len(s.prompts)) for s in suite.scenarios] == [("reflection", 1), ("counting", 1)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "ok", "scenario": "x"}) + "\n" + json.dumps({"prompt": "no label"}) + "\n"
    )
    with pytest.raises(ValidationError, match="line 2 needs string `prompt` and `scenario`"):
        load_suite(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValidationError, match="line 1 is not JSON"):
        load_suite(broken)
    with pytest.raises(ValidationError, match="`suite` must be `builtin` or an existing file"):
        load_suite(tmp_path / "missing.tsv")


def test_tsv_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cols.tsv"
    path.write_text("text\tlabel\nfoo\tbar\n")
    with pytest.raises(ValidationError, match="needs `Prompt` and `Challenge`"):
        load_suite(path)


def test_slug() -> None:
    assert slug("Writing & Symbols") == "writing-symbols"


def test_text_metrics_follow_oneig_bench() -> None:
    # symbols and extra spaces are cleaned away; case counts (OneIG-Bench counts a wrong case as an edit)
    exact = text_metrics("FRESH EGGS", "  FRESH,   EGGS! ")
    assert (exact.edit_distance, exact.complete, exact.word_accuracy, exact.similarity) == (0, True, 1.0, 1.0)
    cased = text_metrics("FRESH EGGS", "fresh EGGS")
    assert cased.edit_distance == 5 and not cased.complete and cased.words_correct == 1
    blank = text_metrics("FRESH EGGS", "")
    assert blank.edit_distance == 10 and blank.similarity == 0.0 and blank.word_accuracy == 0.0
    garbled = text_metrics("SOUP 4 ALL", "S0UP 4 4")
    assert garbled.edit_distance == levenshtein("SOUP 4 ALL", "S0UP 4 4") == 4
    assert garbled.words_correct == 1  # "4" read twice counts once
    assert 0.0 < garbled.similarity < 1.0
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3


def test_parse_review() -> None:
    assert parse_review("a") == Review("accepted", 0.0)
    assert parse_review("edited 40") == Review("edited", 40.0)
    assert parse_review("r 120.5") == Review("rejected", 120.5)
    assert parse_review("") is None and parse_review("s") is None
    with pytest.raises(ValidationError, match="`verdict` must be a, e, r or s but is 'maybe'"):
        parse_review("maybe")
    with pytest.raises(ValidationError, match="`seconds` must be a number but is 'x'"):
        parse_review("e x")
    with pytest.raises(ValidationError, match="`seconds` must be >= 0"):
        Review("edited", -1.0)
