"""The note evaluation's own arithmetic: ROUGE, loose key-phrase matching, gold normalisation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "eval_notes.py"
_spec = importlib.util.spec_from_file_location("eval_notes", _PATH)
assert _spec is not None and _spec.loader is not None
eval_notes = importlib.util.module_from_spec(_spec)
sys.modules["eval_notes"] = eval_notes
_spec.loader.exec_module(eval_notes)


def test_rouge_n_counts_clipped_overlaps() -> None:
    candidate = "the cat sat on the mat".split()
    reference = "the cat is on the mat".split()
    # unigrams: the x2, cat, on, mat overlap = 5 of 6 each side
    assert eval_notes.rouge_n(candidate, reference, 1) == pytest.approx(5 / 6)
    # bigrams: "the cat", "on the", "the mat" = 3 of 5
    assert eval_notes.rouge_n(candidate, reference, 2) == pytest.approx(3 / 5)
    assert eval_notes.rouge_n(["a", "a", "a"], ["a"], 1) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert eval_notes.rouge_n([], reference, 1) == 0.0


def test_rouge_l_uses_the_longest_common_subsequence() -> None:
    assert eval_notes.lcs_length("a b c d e".split(), "a c e".split()) == 3
    assert eval_notes.lcs_length("x y".split(), "a b".split()) == 0
    candidate = "police killed the gunman".split()
    reference = "police kill the gunman".split()
    assert eval_notes.rouge_l(candidate, reference) == pytest.approx(3 / 4)
    assert eval_notes.rouge_scores("Same text.", "same TEXT") == pytest.approx((1.0, 1.0, 1.0))


def test_loose_and_strict_phrase_matching() -> None:
    text = "Retorno daqui a sete dias. Mucosas rosadas, sem sangue nas fezes. Ele está vomitando."
    assert eval_notes.phrase_found("retorno em 7 dias", text, "pt", strict=True)
    assert eval_notes.phrase_found("vômito", text, "pt")  # inflection
    assert eval_notes.phrase_found("sem sangue nas fezes", text, "pt", strict=True)
    assert eval_notes.phrase_found("mucosas pálidas", text, "pt")  # half the words
    assert not eval_notes.phrase_found("mucosas pálidas", text, "pt", strict=True)
    assert not eval_notes.phrase_found("retorno em 10 dias", text, "pt")  # numbers must match
    assert not eval_notes.phrase_found("desidratação", text, "pt")


def test_gold_fields_are_normalised() -> None:
    assert eval_notes.gold_dose("0,25 mg/kg") == (0.25, "mg/kg")
    assert eval_notes.gold_dose("4 gotas") == (4, "drop")
    assert eval_notes.gold_dose("5 ml/kg/h") == (5, "ml/kg/h")
    assert eval_notes.gold_routes("intravenosa e subcutânea") == frozenset({"intravenous", "subcutaneous"})
    assert eval_notes.gold_frequency("a cada 30 dias").interval_hours == 720
    assert eval_notes.gold_frequency("every 8 hours as needed") == eval_notes.Frequency(8, True, False)
    assert eval_notes.gold_frequency("infusão contínua").continuous


def test_aci_dialogue_becomes_segments_with_roles() -> None:
    segments = eval_notes.aci_segments("[doctor] hi , how are you ?\n[patient] i do n't feel well .")
    assert [(s.speaker, s.text) for s in segments] == [
        ("doctor", "hi, how are you?"),
        ("patient", "i don't feel well."),
    ]
    assert segments[0].end_ms <= segments[1].start_ms


def test_rouge_lsum_takes_the_union_of_lcs_over_lines() -> None:
    reference = ["w1 w2 w3 w4 w5", "w6 w7 w8"]
    candidate = ["w1 w2 w6 w7 w8", "w1 w3 w8 w9 w5"]
    # Lin (2004): union LCS of reference line 1 with both candidate lines is w1 w2 w3 w5 (4 hits),
    # of line 2 is w6 w7 w8 (3 hits); clipped by counts: 7 hits, P = 7/10, R = 7/8.
    expected = 2 * (7 / 10) * (7 / 8) / (7 / 10 + 7 / 8)
    assert eval_notes.rouge_lsum(candidate, reference) == pytest.approx(expected)
    assert eval_notes.rouge_lsum(["a b c"], ["a b c"]) == pytest.approx(1.0)


def test_negations_are_those_of_the_case_language() -> None:
    # Portuguese "no" is "em + o" ("dor no local"), a negation only in English and Spanish.
    assert eval_notes.content_tokens("dor no local", "pt") == ["dor", "local"]
    assert eval_notes.content_tokens("sem coceira", "pt") == ["NEG", "coceira"]
    assert eval_notes.content_tokens("no cough", "en") == ["NEG", "cough"]
    assert eval_notes.content_tokens("no subir escaleras", "es") == ["NEG", "subir", "escaleras"]
    assert eval_notes.phrase_found("dor no local", "O local pode doer um ou dois dias.", "pt")
