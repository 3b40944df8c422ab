"""Unit tests for how the rules note generator joins answers to their questions, feeds a sentence
to more than one section, writes clinical terms for lay words and renders the vital signs.

The consultations below are written for these tests (spoken style, numbers spelled out); nothing
is read from outside the repository.
"""

from __future__ import annotations

import re

import pytest

from services.notegen.domain.generator import (
    GeneratedNote,
    TranscriptSegment,
    _fold,
    generate_note,
)
from services.notegen.domain.numbers import find_numbers
from services.notegen.domain.terms import (
    TERM_RULES,
    find_terms,
    negated,
    term_vocabulary,
    vital_phrase,
)

Turn = tuple[str, str]

PT_CAT: list[Turn] = [
    ("doctor", "Boa tarde! O que tá acontecendo com a Mimi?"),
    ("patient", "Boa tarde. Ela tá babando muito e hoje cedo ela caiu da janela."),
    ("doctor", "E o apetite?"),
    ("patient", "Come bem, até mais que antes."),
    ("doctor", "Ela desmaiou alguma vez?"),
    ("patient", "Não, nunca."),
    ("doctor", "Ela tá tossindo?"),
    ("patient", "Tá sim."),
    (
        "doctor",
        "Vamos examinar. Peso, quatro quilos. Não, espera, são três vírgula oito quilos. "
        "Temperatura trinta e nove e meio. As pupilas estão bem fechadinhas e a gengiva está "
        "vermelha.",
    ),
    (
        "doctor",
        "Parece uma intoxicação. Ela vai ficar internada vinte e quatro horas em observação, "
        "porque é uma intoxicação grave.",
    ),
    ("doctor", "Vou pegar a veia e ligar o soro agora."),
    (
        "doctor",
        "Em casa, recolha as plantas do quintal. E um difusor de feromônio na tomada ajuda "
        "bastante na adaptação.",
    ),
    ("doctor", "Retorno em três dias."),
]

EN_BACK: list[Turn] = [
    ("doctor", "Hello, what brings you in today?"),
    ("patient", "I hurt my knee playing football on Sunday."),
    ("doctor", "Have you had a fever?"),
    ("patient", "Yes, since yesterday."),
    ("doctor", "Any numbness in the leg?"),
    ("patient", "No."),
    (
        "doctor",
        "Let me examine you. Your temperature is thirty-eight point one. The knee is swollen. "
        "Strength, reflexes and sensation are normal.",
    ),
    ("doctor", "I think this is a sprain. Take ibuprofen four hundred milligrams by mouth every eight hours with food for five days."),
    ("doctor", "Come back in one week."),
]

ES_CAT: list[Turn] = [
    ("doctor", "Buenos días. ¿Qué le pasa a Michi?"),
    ("patient", "Le salen lagañas del ojo y estornuda mucho desde el lunes."),
    (
        "doctor",
        "Vamos a revisarla. Pesa tres kilos. Temperatura treinta y ocho coma cinco. "
        "Tiene la conjuntiva roja.",
    ),
    ("doctor", "Pienso en una conjuntivitis. Puede que haya que operar el párpado, lo decidimos en la revisión."),
    ("doctor", "Le voy a dar colirio de tobramicina, una gota en cada ojo, cada ocho horas, durante siete días."),
    ("doctor", "La revisión es en siete días."),
]


def _segments(turns: list[Turn]) -> list[TranscriptSegment]:
    return [
        TranscriptSegment(text=text, start_ms=i * 5000, end_ms=i * 5000 + 4500, speaker=speaker)
        for i, (speaker, text) in enumerate(turns)
    ]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def _sentences(note: GeneratedNote, label: str) -> list[str]:
    section = note.section(label)
    assert section is not None, f"missing section {label}: {[s.label for s in note.sections]}"
    return [s.text for s in section.sentences]


@pytest.fixture(scope="module")
def pt_note() -> GeneratedNote:
    return generate_note(_segments(PT_CAT), "pt")


# ---------------------------------------------------------------------------------------------
# Answers joined to their questions
# ---------------------------------------------------------------------------------------------


def test_a_short_answer_carries_its_question(pt_note: GeneratedNote) -> None:
    history = pt_note.section("anamnesis")
    assert history is not None
    joined = next(s for s in history.sentences if "come bem" in s.text.casefold())
    assert joined.text == "O apetite: come bem, até mais que antes."
    # It cites the question and the answer.
    assert joined.source_segments == (2, 3)
    assert "?" not in " ".join(s.content for s in pt_note.sections)


def test_a_no_answer_denies_the_symptom_asked_about(pt_note: GeneratedNote) -> None:
    history = _sentences(pt_note, "anamnesis")
    assert "Ela desmaiou alguma vez: não, nunca." in history
    assert "Sem síncope." in history


def test_a_yes_to_a_symptom_question_completes_the_chief_complaint() -> None:
    note = generate_note(_segments(EN_BACK), "en", domain="human")
    complaint = _sentences(note, "chief_complaint")
    # The open question is not joined: its answer stands alone.
    assert complaint[0] == "I hurt my knee playing football on Sunday."
    assert "Have you had a fever: yes, since yesterday." in complaint
    assert "No numbness." not in complaint
    assert any(s.startswith("Any numbness in the leg: no") for s in _sentences(note, "anamnesis"))


def test_a_question_without_an_answer_is_not_written() -> None:
    turns: list[Turn] = [
        ("patient", "Ele está com diarreia desde ontem e vomitou duas vezes."),
        ("doctor", "Ele comeu alguma coisa diferente? Vamos examinar. Temperatura trinta e nove."),
        ("doctor", "Parece uma gastroenterite."),
    ]
    note = generate_note(_segments(turns), "pt")
    text = " ".join(s.content for s in note.sections)
    assert "comeu alguma coisa diferente" not in text
    assert "?" not in text


# ---------------------------------------------------------------------------------------------
# A sentence in more than one section; sentences carried by the talk around them
# ---------------------------------------------------------------------------------------------


def test_a_sentence_with_facts_of_two_sections_feeds_both(pt_note: GeneratedNote) -> None:
    both = "Ela vai ficar internada vinte e quatro horas em observação, porque é uma intoxicação grave."
    assert both in _sentences(pt_note, "assessment")
    assert both in _sentences(pt_note, "plan")
    # Its primary place is what the structured extraction sees: the diagnosis is still read.
    assert any("intoxica" in d.text for d in pt_note.structured.diagnoses)


def test_a_clinician_sentence_without_keywords_follows_its_neighbours(pt_note: GeneratedNote) -> None:
    assert "Um difusor de feromônio na tomada ajuda bastante na adaptação." in _sentences(
        pt_note, "owner_instructions"
    )


# ---------------------------------------------------------------------------------------------
# Clinical terms for lay words
# ---------------------------------------------------------------------------------------------


def test_lay_words_get_their_clinical_terms_with_provenance(pt_note: GeneratedNote) -> None:
    complaint = pt_note.section("chief_complaint")
    assert complaint is not None
    terms = next(s for s in complaint.sentences if s.text == "Salivação excessiva, queda.")
    assert terms.source_segments == (1,)
    assert "Apetite aumentado." in _sentences(pt_note, "anamnesis")
    assert "Miose, gengivite." in _sentences(pt_note, "physical_exam")
    assert "Acesso venoso, fluidoterapia." in _sentences(pt_note, "plan")


def test_terms_in_english_and_spanish() -> None:
    en = generate_note(_segments(EN_BACK), "en", domain="human")
    assert "Normal neurological exam." in _sentences(en, "physical_exam")
    es = generate_note(_segments(ES_CAT), "es")
    assert "Secreción ocular." in _sentences(es, "chief_complaint")
    # A procedure said with a hedge is written as possible.
    assert "Posible cirugía." in _sentences(es, "plan")


def test_negated_mentions_give_no_term() -> None:
    assert find_terms(_fold("Não, ela não tá babando."), "pt") == []
    assert find_terms(_fold("He doesn't have a runny nose."), "en") == []
    assert [h.term for h in find_terms(_fold("Tá babando muito."), "pt")] == ["salivação excessiva"]
    assert [h.term for h in find_terms(_fold("Hoje eu não vou passar nenhum remédio."), "pt")] == ["sem medicação"]
    assert negated("síncope", "pt") == "sem síncope" and negated("syncope", "en") == "no syncope"


def test_a_rule_needing_a_drug_needs_one_named() -> None:
    assert find_terms(_fold("Ele sente dor pra subir a escada."), "pt") == []
    assert [h.term for h in find_terms(_fold("Meloxicam pra dor."), "pt", drug=True)] == ["analgesia"]


@pytest.mark.parametrize(
    ("turns", "language", "domain"),
    [(PT_CAT, "pt", "veterinary"), (EN_BACK, "en", "human"), (ES_CAT, "es", "veterinary")],
    ids=["pt", "en", "es"],
)
def test_every_word_not_said_is_a_term_found_in_the_words_it_cites(
    turns: list[Turn], language: str, domain: str
) -> None:
    segments = _segments(turns)
    note = generate_note(segments, language, domain=domain)
    said_numbers = {n.value for s in segments for n in find_numbers(s.text, language)}
    vocabulary = term_vocabulary(language)
    for section in note.sections:
        for number in find_numbers(section.content, language):
            assert number.value in said_numbers, (section.label, number)
        for sentence in section.sentences:
            cited = " ".join(segments[i].text for i in sentence.source_segments)
            extra = {w for w in _words(sentence.text) - _words(cited) if not w.isdigit()}
            if not extra:
                continue
            assert extra <= vocabulary, (sentence.text, extra)
            if re.search(r"\d", sentence.text):
                continue  # the vital-signs line, checked below
            found = {h.term for h in find_terms(_fold(cited), language, drug=True)}
            found |= {negated(t, language) for t in set(found)}
            found |= {f"{p} {t}" for t in set(found) for p in ("possível", "possible", "posible")}
            for term in sentence.text.rstrip(".").split(", "):
                assert term.casefold() in {f.casefold() for f in found}, (sentence.text, cited)


def test_term_tables_compile_and_name_known_kinds() -> None:
    for language, rules in TERM_RULES.items():
        assert rules, language
        for rule in rules:
            assert rule.kind in ("symptom", "sign", "plan"), rule
        find_terms("x", language)


# ---------------------------------------------------------------------------------------------
# Vital signs and treatments written from the structured facts
# ---------------------------------------------------------------------------------------------


def test_vital_signs_are_written_once_with_the_corrected_value(pt_note: GeneratedNote) -> None:
    exam = pt_note.section("physical_exam")
    assert exam is not None
    line = exam.sentences[0]
    assert line.text == "Peso 3,8 kg; temperatura 39,5 °C."
    assert line.source_segments == (8,)
    # The weight corrected mid-sentence is not written again as said.
    assert "quatro quilos" not in exam.content
    assert vital_phrase("heart_rate_bpm", 96.0, "en") == "heart rate 96 bpm"


def test_the_plan_names_a_medicine_with_its_form() -> None:
    es = generate_note(_segments(ES_CAT), "es")
    assert "Colirio de tobramicina." in _sentences(es, "plan")


def test_a_conclusion_ending_the_examination_is_also_a_finding() -> None:
    turns: list[Turn] = [
        ("patient", "Ela veio pra vacina anual e está comendo bem."),
        ("doctor", "Vamos examinar. Peso, oito quilos. Pulmão limpo. Tá saudável, pode vacinar."),
        ("doctor", "Mas parece que tem uma otite leve no ouvido direito."),
        ("doctor", "Vou aplicar a vacina antirrábica embaixo da pele."),
    ]
    note = generate_note(_segments(turns), "pt")
    assert "Tá saudável, pode vacinar." in _sentences(note, "assessment")
    assert "Tá saudável, pode vacinar." in _sentences(note, "physical_exam")
    # A diagnosis given after the examination, in its own words, is not a finding.
    assert not any("otite" in s for s in _sentences(note, "physical_exam"))
