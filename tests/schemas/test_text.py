"""The characters no record may carry: found by the boundaries' check, removed by the mail cleaner."""

from __future__ import annotations

from schemas.text import clean_text, refused_character


def test_nul_and_other_c0_controls_and_lone_surrogates_are_refused_but_tab_and_newlines_are_text() -> None:
    assert refused_character("a\x00b") == "U+0000"
    assert refused_character("\x1b[31m") == "U+001B"
    assert refused_character("x\ud800") == "U+D800"
    assert refused_character("tab\tcr\rlf\n é 漢 😀 \x7f") is None


def test_clean_text_removes_control_characters_and_replaces_lone_surrogates() -> None:
    assert clean_text("a\x00b\tc\r\n\x1bd\udcff") == "ab\tc\r\nd\ufffd"
