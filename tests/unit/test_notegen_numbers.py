"""Spoken numbers in pt, en and es, as the transcription writes them, read as values."""

from __future__ import annotations

import pytest

from services.notegen.domain.numbers import find_numbers, format_number, parse_number, to_digits


@pytest.mark.parametrize(
    ("text", "language", "value"),
    [
        # Portuguese
        ("trinta e nove e quatro", "pt", 39.4),
        ("trinta e oito e meio", "pt", 38.5),
        ("trinta vírgula cinco", "pt", 30.5),
        ("quatro vírgula oito", "pt", 4.8),
        ("zero vírgula vinte e cinco", "pt", 0.25),
        ("zero vírgula zero cinco", "pt", 0.05),
        ("cento e vinte", "pt", 120),
        ("duzentos e vinte", "pt", 220),
        ("cem", "pt", 100),
        ("mil e quinhentos", "pt", 1500),
        ("dois mil e quinhentos", "pt", 2500),
        ("dois e meio", "pt", 2.5),
        ("doze e meio", "pt", 12.5),
        ("vinte e quatro", "pt", 24),
        ("quatorze", "pt", 14),
        ("catorze", "pt", 14),
        ("dezenove", "pt", 19),
        ("duas", "pt", 2),
        # English
        ("thirty-eight point four", "en", 38.4),
        ("one hundred twenty", "en", 120),
        ("a hundred and five", "en", 105),
        ("two hundred fifty", "en", 250),
        ("one thousand", "en", 1000),
        ("fifteen hundred", "en", 1500),
        ("two and a half", "en", 2.5),
        ("zero point two five", "en", 0.25),
        ("eight point six", "en", 8.6),
        ("ninety-six", "en", 96),
        ("one thirty-four", "en", 134),
        # Spanish
        ("treinta y nueve coma cuatro", "es", 39.4),
        ("treinta y ocho y medio", "es", 38.5),
        ("cero coma uno", "es", 0.1),
        ("ciento veinte", "es", 120),
        ("doscientos cincuenta", "es", 250),
        ("veinticuatro", "es", 24),
        ("dieciocho", "es", 18),
        ("dos y medio", "es", 2.5),
        # Digits as a recogniser may write them
        ("39,4", "pt", 39.4),
        ("39.4", "en", 39.4),
        ("120", "es", 120),
        ("1.000", "pt", 1000),
        ("0,125", "pt", 0.125),
    ],
)
def test_spoken_numbers_are_read(text: str, language: str, value: float) -> None:
    assert parse_number(text, language) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("meio comprimido a cada doze horas", "pt", "0.5 comprimido a cada 12 horas"),
        ("half a tablet twice a day", "en", "0.5 a tablet twice a day"),
        ("medio comprimido cada doce horas", "es", "0.5 comprimido cada 12 horas"),
        ("retorno em sete dias", "pt", "retorno em 7 dias"),
        ("Blood pressure one thirty-four over eighty-two.", "en", "Blood pressure 134 over 82."),
        ("Doze e meio aqui na balança.", "pt", "12.5 aqui na balança."),
    ],
)
def test_to_digits_rewrites_numbers_in_place(text: str, language: str, expected: str) -> None:
    assert to_digits(text, language) == expected


def test_a_half_alone_is_not_a_number_unless_it_quantifies() -> None:
    # "meio" is also "somewhat": "mas meio secas" holds no number.
    assert find_numbers("Mucosas rosadas, mas meio secas.", "pt") == []
    assert [n.value for n in find_numbers("Dê meio comprimido.", "pt")] == [0.5]


def test_a_number_never_runs_across_punctuation() -> None:
    # "coma uno, un poquito alta": the temperature is 39.1, then "un" is an article.
    numbers = find_numbers("Temperatura treinta y nueve coma uno, un poquito alta.", "es")
    assert numbers[0].value == pytest.approx(39.1)
    assert numbers[0].text == "treinta y nueve coma uno"
    assert [n.value for n in find_numbers("trinta e nove. E quatro", "pt")] == [39, 4]


def test_words_are_numbers_only_in_their_language() -> None:
    assert parse_number("doce", "es") == 12
    assert parse_number("doce", "pt") is None  # "sweet"
    assert parse_number("once", "es") == 11
    assert [n.value for n in find_numbers("once a day", "en")] == []
    assert [n.value for n in find_numbers("a bula dos comprimidos", "pt")] == []
    assert [n.value for n in find_numbers("Um, so I've had it", "en")] == []


def test_spans_point_at_the_words_said() -> None:
    text = "Peso, trinta vírgula cinco quilos. Coração cento e vinte."
    numbers = find_numbers(text, "pt")
    assert [(n.value, text[n.start : n.end]) for n in numbers] == [
        (30.5, "trinta vírgula cinco"),
        (120, "cento e vinte"),
    ]


def test_a_list_is_not_read_as_one_number() -> None:
    assert [n.value for n in find_numbers("umas três ou quatro vezes", "pt")] == [3, 4]
    assert [n.value for n in find_numbers("dois e três", "pt")] == [2, 3]


def test_unknown_language_reads_the_unambiguous_words() -> None:
    assert parse_number("trinta e nove", None) == 39
    assert parse_number("twenty-four", "xx") == 24


def test_format_number_is_short_and_exact() -> None:
    assert format_number(120.0) == "120"
    assert format_number(39.4) == "39.4"
    assert format_number(0.25) == "0.25"
