"""Unit tests for the offline note generator and the section catalogue.

The consultations below are written for these tests (spoken style, numbers spelled out, as the
transcription stage delivers them); nothing is read from outside the repository.
"""

from __future__ import annotations

import re
import time
import unicodedata

import pytest

from services.notegen.domain.generator import (
    GENERATOR_NAME,
    GeneratedNote,
    TranscriptSegment,
    TranscriptTooShort,
    generate_note,
)
from services.notegen.domain.sections import SECTION_LABELS, section_order, title_for, titles_for
from services.notegen.domain.terms import term_vocabulary

Turn = tuple[str, str]

PT_VET: list[Turn] = [
    ("doctor", "Bom dia! Tudo bem? Esse é o Bob? O que aconteceu com ele?"),
    (
        "patient",
        "Bom dia, doutor. Ele está vomitando desde ontem e não come nada, sabe? "
        "Vomitou umas quatro vezes.",
    ),
    ("doctor", "Ele comeu alguma coisa diferente?"),
    ("patient", "Acho que ele comeu um osso no churrasco de domingo. As vacinas estão em dia."),
    (
        "doctor",
        "Vamos examinar. Peso, doze quilos. Temperatura trinta e nove e meio, um pouco alta. "
        "Mucosas rosadas. Na palpação a barriga está sensível.",
    ),
    (
        "doctor",
        "Parece ser uma gastrite, provavelmente por causa do osso. "
        "Vamos fazer um raio-x para descartar corpo estranho.",
    ),
    ("doctor", "Vou passar omeprazol, dez miligramas, pela boca, uma vez ao dia, por cinco dias."),
    ("patient", "Omeprazol, uma vez ao dia, cinco dias."),
    ("doctor", "Ofereça comida leve em porções pequenas e mantenha água fresca sempre. Evite ossos."),
    ("doctor", "Retorno em sete dias."),
    ("patient", "Combinado. Muito obrigado, doutor."),
]

EN_HUMAN: list[Turn] = [
    ("doctor", "Good morning, please have a seat. What brings you in today?"),
    ("patient", "Good morning, doctor. I have had a bad cough and a fever since Monday."),
    ("doctor", "Have you taken anything for it?"),
    ("patient", "I took some paracetamol last night. I have no allergies."),
    (
        "doctor",
        "Let me examine you. Your temperature is thirty-eight point two. Heart rate ninety. "
        "I can hear crackles in the right lung.",
    ),
    ("doctor", "I think this is a chest infection, probably a pneumonia."),
    ("doctor", "We will do a chest x-ray today."),
    (
        "doctor",
        "I'm going to prescribe amoxicillin, five hundred milligrams by mouth three times a day "
        "for seven days.",
    ),
    (
        "doctor",
        "Drink plenty of fluids and rest. If you have trouble breathing, go to the emergency "
        "department.",
    ),
    ("doctor", "Come back in one week for a review."),
    ("patient", "Thank you, doctor."),
]

ES_VET: list[Turn] = [
    ("doctor", "Buenos días. ¿Qué le pasa a Toby?"),
    ("patient", "Buenos días, doctora. Está con mucha tos desde hace cinco días y casi no come."),
    ("doctor", "¿Está vacunado?"),
    ("patient", "Sí, tiene las vacunas al día. Nunca tuvo nada en los pulmones."),
    (
        "doctor",
        "Vamos a revisarlo. Pesa veinte kilos. Temperatura treinta y nueve coma dos. "
        "Al auscultar el pulmón hay ruidos.",
    ),
    ("doctor", "Pienso en una traqueobronquitis infecciosa. Vamos a hacer una radiografía de tórax."),
    (
        "doctor",
        "Le voy a dar doxiciclina, cien miligramos, por boca, cada doce horas, durante diez días.",
    ),
    ("doctor", "Evite los paseos largos y mantenga al perro en reposo."),
    ("doctor", "Vuelva a revisión en siete días."),
    ("patient", "Muchas gracias, doctora."),
]

PT_GREETINGS: list[Turn] = [
    ("doctor", "Bom dia! Tudo bem? Pode entrar, por favor."),
    ("patient", "Bom dia, doutora. Tudo bem, obrigado."),
]

EN_GREETINGS: list[Turn] = [
    ("doctor", "Hello, good morning! Come on in, have a seat."),
    ("patient", "Hi, thank you."),
]

ES_GREETINGS: list[Turn] = [
    ("doctor", "¡Hola, buenos días!"),
    ("patient", "Buenos días, doctora. Gracias."),
]

ALL_FIXTURES = {
    "pt_vet": (PT_VET, "pt", "veterinary"),
    "en_human": (EN_HUMAN, "en", "human"),
    "es_vet": (ES_VET, "es", "veterinary"),
}


def _segments(turns: list[Turn], *, with_speakers: bool = False) -> list[TranscriptSegment]:
    """One segment per turn, five seconds each; speakers only when asked for."""
    return [
        TranscriptSegment(
            text=text,
            start_ms=i * 5000,
            end_ms=i * 5000 + 4500,
            speaker=speaker if with_speakers else "unspecified",
        )
        for i, (speaker, text) in enumerate(turns)
    ]


def _words(text: str) -> set[str]:
    """Words of ``text``, lowercased, without punctuation (accents kept: they are spelling)."""
    return set(re.findall(r"\w+", unicodedata.normalize("NFC", text).casefold()))


def _content(note: GeneratedNote, label: str) -> str:
    section = note.section(label)
    assert section is not None, f"missing section {label}: {[s.label for s in note.sections]}"
    return section.content.casefold()


@pytest.fixture(params=[False, True], ids=["unspecified", "diarized"])
def with_speakers(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# ---------------------------------------------------------------------------------------------
# Section catalogue
# ---------------------------------------------------------------------------------------------


def test_catalogue_labels_are_in_note_order() -> None:
    assert SECTION_LABELS == (
        "chief_complaint",
        "anamnesis",
        "physical_exam",
        "assessment",
        "plan",
        "prescriptions",
        "owner_instructions",
        "follow_up",
    )
    assert [section_order(label) for label in SECTION_LABELS] == list(range(1, 9))


def test_titles_are_localised() -> None:
    assert title_for("anamnesis", "pt") == "Anamnese"
    assert title_for("anamnesis", "en") == "History"
    assert title_for("owner_instructions", "pt") == "Orientações ao tutor"
    assert title_for("follow_up", "pt-BR") == "Retorno"
    assert title_for("physical_exam", "es") == "Examen físico"
    assert title_for("assessment", "pt") == "Avaliação / Diagnóstico"
    for language in ("pt", "en", "es"):
        titles = titles_for(language)
        assert list(titles) == list(SECTION_LABELS)
        assert all(titles.values())
        assert len(set(titles.values())) == len(SECTION_LABELS)


def test_human_domain_titles_address_the_patient() -> None:
    assert title_for("owner_instructions", "en", "human") == "Patient instructions"
    assert title_for("owner_instructions", "pt", "human") == "Orientações ao paciente"
    assert title_for("owner_instructions", "es", "human") == "Indicaciones al paciente"
    assert title_for("plan", "en", "human") == title_for("plan", "en", "veterinary")


def test_unknown_language_titles_fall_back_to_english() -> None:
    assert title_for("chief_complaint", "de") == "Chief complaint"
    assert title_for("owner_instructions", "fr", "human") == "Patient instructions"


def test_unknown_label_or_domain_is_rejected() -> None:
    with pytest.raises(ValueError):
        title_for("diagnosis", "en")
    with pytest.raises(ValueError):
        title_for("plan", "en", "dental")


# ---------------------------------------------------------------------------------------------
# Note shape
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_FIXTURES))
def test_all_sections_present_in_catalogue_order_with_localised_titles(
    name: str, with_speakers: bool
) -> None:
    turns, language, domain = ALL_FIXTURES[name]
    note = generate_note(_segments(turns, with_speakers=with_speakers), language, domain=domain)

    assert note.language == language
    assert note.generator == GENERATOR_NAME
    assert [s.label for s in note.sections] == list(SECTION_LABELS)
    assert [s.order for s in note.sections] == list(range(1, len(note.sections) + 1))
    for section in note.sections:
        assert section.title == title_for(section.label, language, domain)
        assert section.content.strip()


def test_empty_sections_are_omitted_and_order_stays_dense() -> None:
    # No medicine, no instructions, no return: those sections must not appear at all.
    turns: list[Turn] = [
        ("patient", "Ela está tossindo muito desde sábado."),
        ("doctor", "Vamos examinar. Temperatura trinta e oito e meio. Pulmão com crepitação."),
        ("doctor", "Parece ser uma bronquite."),
    ]
    note = generate_note(_segments(turns), "pt")

    labels = [s.label for s in note.sections]
    assert labels == ["chief_complaint", "physical_exam", "assessment"]
    assert [s.order for s in note.sections] == [1, 2, 3]
    for absent in ("prescriptions", "owner_instructions", "follow_up", "plan"):
        assert note.section(absent) is None


# ---------------------------------------------------------------------------------------------
# Placement of key phrases
# ---------------------------------------------------------------------------------------------


def test_pt_vet_key_phrases_land_in_their_sections(with_speakers: bool) -> None:
    note = generate_note(_segments(PT_VET, with_speakers=with_speakers), "pt")

    assert "vomitando" in _content(note, "chief_complaint")
    assert "vacinas estão em dia" in _content(note, "anamnesis")
    exam = _content(note, "physical_exam")
    # Vital signs are written once, from the structured values ("Peso, doze quilos." ->
    # "peso 12 kg"), citing the segment they were said in.
    assert "peso 12 kg; temperatura 39,5 °c" in exam
    assert "mucosas rosadas" in exam
    assert "gastrite" in _content(note, "assessment")
    assert "raio-x" in _content(note, "plan")
    prescriptions = _content(note, "prescriptions")
    assert "omeprazol" in prescriptions
    assert "dez miligramas" in prescriptions
    instructions = _content(note, "owner_instructions")
    assert "porções pequenas" in instructions
    assert "evite ossos" in instructions
    follow_up = _content(note, "follow_up")
    assert "retorno" in follow_up
    assert "sete dias" in follow_up

    # The drug is prescribed, not a finding or a return date.
    assert "omeprazol" not in _content(note, "follow_up")
    assert "omeprazol" not in exam


def test_en_human_key_phrases_land_in_their_sections(with_speakers: bool) -> None:
    note = generate_note(_segments(EN_HUMAN, with_speakers=with_speakers), "en", domain="human")

    complaint = _content(note, "chief_complaint")
    assert "cough" in complaint
    assert "fever" in complaint
    assert "paracetamol" in _content(note, "anamnesis")
    exam = _content(note, "physical_exam")
    assert "temperature 38.2 °c; heart rate 90 bpm" in exam
    assert "crackles" in exam
    assert "chest infection" in _content(note, "assessment")
    assert "x-ray" in _content(note, "plan")
    assert "amoxicillin" in _content(note, "prescriptions")
    instructions = note.section("owner_instructions")
    assert instructions is not None
    assert instructions.title == "Patient instructions"
    assert "plenty of fluids" in instructions.content.casefold()
    assert "trouble breathing" in instructions.content.casefold()
    assert "one week" in _content(note, "follow_up")


def test_es_vet_key_phrases_land_in_their_sections(with_speakers: bool) -> None:
    note = generate_note(_segments(ES_VET, with_speakers=with_speakers), "es")

    assert "tos" in _words(_content(note, "chief_complaint"))
    assert "vacunas" in _content(note, "anamnesis")
    exam = _content(note, "physical_exam")
    assert "peso 20 kg; temperatura 39,2 °c" in exam
    assert "traqueobronquitis" in _content(note, "assessment")
    assert "doxiciclina" in _content(note, "prescriptions")
    assert "reposo" in _content(note, "owner_instructions")
    assert "siete días" in _content(note, "follow_up")
    assert note.section("follow_up") is not None
    assert note.section("follow_up").title == "Seguimiento"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Nothing invented, provenance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_FIXTURES))
def test_no_section_contains_a_word_that_was_not_said(name: str, with_speakers: bool) -> None:
    turns, language, domain = ALL_FIXTURES[name]
    segments = _segments(turns, with_speakers=with_speakers)
    said = set().union(*(_words(s.text) for s in segments))
    # Besides what was said, a note only writes clinical terms and vital-sign labels from the
    # tables in terms.py, and the numbers of the structured vitals.
    allowed = set(term_vocabulary(language)) | {"°c", "c"}

    note = generate_note(segments, language, domain=domain)

    for section in note.sections:
        invented = {w for w in _words(section.content) - said - allowed if not re.fullmatch(r"[\d,.]+", w)}
        assert not invented, f"{section.label} holds words never said: {sorted(invented)}"


@pytest.mark.parametrize("name", sorted(ALL_FIXTURES))
def test_source_segments_are_valid_indices_that_hold_the_content(
    name: str, with_speakers: bool
) -> None:
    turns, language, domain = ALL_FIXTURES[name]
    segments = _segments(turns, with_speakers=with_speakers)

    note = generate_note(segments, language, domain=domain)

    for section in note.sections:
        assert section.source_segments, section.label
        assert section.source_segments == sorted(set(section.source_segments))
        assert all(0 <= i < len(segments) for i in section.source_segments)
        # Every word of every sentence comes from the segments it cites, but for the clinical
        # terms and vital-sign labels of terms.py (checked in test_notegen_terms.py).
        allowed = set(term_vocabulary(language))
        for sentence in section.sentences:
            cited = set().union(*(_words(segments[i].text) for i in sentence.source_segments))
            extra = {w for w in _words(sentence.text) - cited - allowed if not w.isdigit()}
            assert not extra, (section.label, sentence.text, extra)


def test_prescription_provenance_points_at_the_prescribing_segment() -> None:
    note = generate_note(_segments(PT_VET), "pt")
    prescriptions = note.section("prescriptions")
    assert prescriptions is not None
    assert 6 in prescriptions.source_segments


def test_sentence_broken_across_segments_is_joined_and_cites_both() -> None:
    segments = [
        TranscriptSegment("Ele está vomitando muito", 0, 1500),
        TranscriptSegment("desde ontem de manhã.", 1500, 3000),
        TranscriptSegment("Vamos examinar. Temperatura trinta e nove, peso oito quilos.", 3000, 9000),
        TranscriptSegment("Retorno em três dias.", 9000, 11000),
    ]
    note = generate_note(segments, "pt")

    complaint = note.section("chief_complaint")
    assert complaint is not None
    assert complaint.content == "Ele está vomitando muito desde ontem de manhã."
    assert complaint.source_segments == [0, 1]


def test_content_is_cleaned_but_not_reworded() -> None:
    note = generate_note(_segments(PT_VET), "pt")
    complaint = note.section("chief_complaint")
    assert complaint is not None
    # "Bom dia, doutor." is dropped, the tag question ", sabe?" is trimmed to a full stop.
    assert complaint.content.startswith("Ele está vomitando desde ontem e não come nada.")
    for section in note.sections:
        assert section.content[0].isupper(), section.label
        assert section.content.rstrip()[-1] in ".!?…", section.label


def test_questions_are_not_written_into_the_note() -> None:
    note = generate_note(_segments(PT_VET), "pt")
    text = " ".join(s.content for s in note.sections)
    assert "?" not in text
    assert "comeu alguma coisa diferente" not in text


# ---------------------------------------------------------------------------------------------
# Speakers as hints
# ---------------------------------------------------------------------------------------------


def test_read_back_by_the_owner_is_not_repeated() -> None:
    for with_speakers in (False, True):
        note = generate_note(_segments(PT_VET, with_speakers=with_speakers), "pt")
        prescriptions = _content(note, "prescriptions")
        assert prescriptions.count("omeprazol") == 1


def test_patient_statements_never_become_findings_when_speakers_are_known() -> None:
    turns: list[Turn] = [
        ("patient", "Ele está mancando da pata de trás desde ontem."),
        ("doctor", "Vamos examinar. Peso, vinte quilos. Temperatura trinta e oito e meio."),
        ("patient", "Em casa ele pesava vinte e dois quilos na balança da farmácia."),
        ("doctor", "O joelho direito está inchado e com dor na palpação."),
        ("doctor", "Suspeita de ruptura de ligamento. Vamos fazer um raio-x."),
    ]
    diarized = generate_note(_segments(turns, with_speakers=True), "pt")
    assert "vinte e dois" not in _content(diarized, "physical_exam")
    assert "joelho direito" in _content(diarized, "physical_exam")


def test_chief_complaint_prefers_the_patient_when_speakers_are_known() -> None:
    turns: list[Turn] = [
        ("doctor", "Bom dia. Ele está com a pelagem muito bonita."),
        ("patient", "Obrigada. Mas ele está com diarreia desde sábado."),
        ("doctor", "Vamos examinar. Temperatura trinta e oito e meio, peso dez quilos."),
    ]
    note = generate_note(_segments(turns, with_speakers=True), "pt")
    complaint = _content(note, "chief_complaint")
    assert "diarreia" in complaint
    assert "pelagem" not in complaint


# ---------------------------------------------------------------------------------------------
# Too short, languages, domain, speed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turns", "language"),
    [
        (PT_GREETINGS, "pt"),
        (EN_GREETINGS, "en"),
        (ES_GREETINGS, "es"),
    ],
)
def test_greetings_only_raises_transcript_too_short(turns: list[Turn], language: str) -> None:
    with pytest.raises(TranscriptTooShort) as info:
        generate_note(_segments(turns), language)
    assert info.value.reason == "too_few_words"
    assert info.value.word_count < info.value.min_words == 12


def test_empty_transcript_raises_transcript_too_short() -> None:
    with pytest.raises(TranscriptTooShort) as info:
        generate_note([], "pt")
    assert info.value.word_count == 0


def test_talk_without_clinical_content_raises_transcript_too_short() -> None:
    turns: list[Turn] = [
        ("doctor", "Que bonito esse quadro na parede da recepção."),
        ("patient", "Foi minha sobrinha que pintou, ela adora pintar paisagens e flores."),
        ("doctor", "Ficou muito bonito mesmo, parabéns para ela."),
    ]
    with pytest.raises(TranscriptTooShort) as info:
        generate_note(_segments(turns), "pt")
    assert info.value.reason == "no_clinical_content"
    assert info.value.word_count >= 12


def test_error_message_does_not_quote_the_transcript() -> None:
    with pytest.raises(TranscriptTooShort) as info:
        generate_note(_segments(PT_GREETINGS), "pt")
    assert "Bom dia" not in str(info.value)
    assert "Tudo bem" not in str(info.value)


def test_unknown_language_gets_english_titles_and_still_finds_sections() -> None:
    note = generate_note(_segments(PT_VET), "xx")
    assert note.language == "xx"
    assert note.sections[0].title == "Chief complaint"
    assert "omeprazol" in _content(note, "prescriptions")
    assert "sete dias" in _content(note, "follow_up")
    for section in note.sections:
        assert section.title == title_for(section.label, "en")


def test_language_tag_with_region_is_accepted() -> None:
    note = generate_note(_segments(PT_VET), "pt-BR")
    assert note.language == "pt"
    assert note.sections[0].title == "Queixa principal"


def test_unknown_domain_is_rejected() -> None:
    with pytest.raises(ValueError):
        generate_note(_segments(PT_VET), "pt", domain="dental")


def test_generation_is_deterministic() -> None:
    first = generate_note(_segments(EN_HUMAN, with_speakers=True), "en", domain="human")
    second = generate_note(_segments(EN_HUMAN, with_speakers=True), "en", domain="human")
    assert first == second


def test_note_generation_grows_linearly_with_the_transcript() -> None:
    """An hour-long consultation costs about ten times a six-minute one, not a hundred times (no
    quadratic step). CPU time of this process, so other load on the machine does not count; the
    absolute speed is measured in bench/, not here."""
    # About 150 spoken words a minute.
    words_per_round = sum(len(text.split()) for _, text in PT_VET)
    hour = _segments(PT_VET * (9000 // words_per_round + 1))
    six_minutes = _segments(PT_VET * (900 // words_per_round + 1))
    generate_note(six_minutes, "pt")  # compile the tables outside the measurement

    def cpu_seconds(segments) -> float:  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            note = generate_note(segments, "pt")
            best = min(best, time.process_time() - started)
            assert note.sections
        return best

    ratio = cpu_seconds(hour) / cpu_seconds(six_minutes)
    assert len(hour) >= 9 * len(six_minutes)
    assert ratio < 25, f"an hour costs {ratio:.1f}x six minutes"


# ---------------------------------------------------------------------------------------------
# Sentences, regeneration instructions, structured data
# ---------------------------------------------------------------------------------------------


def test_sections_list_their_sentences_with_provenance(with_speakers: bool) -> None:
    segments = _segments(PT_VET, with_speakers=with_speakers)
    note = generate_note(segments, "pt")
    for section in note.sections:
        assert section.content == " ".join(s.text for s in section.sentences)
        assert sorted({i for s in section.sentences for i in s.source_segments}) == section.source_segments
        for sentence in section.sentences:
            assert sentence.start_ms == min(segments[i].start_ms for i in sentence.source_segments)
            assert sentence.end_ms == max(segments[i].end_ms for i in sentence.source_segments)
    follow_up = note.section("follow_up")
    assert follow_up is not None
    assert [(s.text, s.source_segments, s.start_ms, s.end_ms) for s in follow_up.sentences] == [
        ("Retorno em sete dias.", (9,), 45000, 49500)
    ]


def test_structured_data_sits_beside_the_prose() -> None:
    note = generate_note(_segments(PT_VET, with_speakers=True), "pt")
    structured = note.structured
    assert structured.vitals.weight_kg is not None and structured.vitals.weight_kg.value == 12
    assert structured.vitals.temperature_c is not None and structured.vitals.temperature_c.value == 39.5
    assert [(m.name, m.dose, m.unit, m.route, m.interval_hours, m.duration_days) for m in structured.medications] == [
        ("omeprazol", 10, "mg", "oral", 24, 5)
    ]
    assert [(d.text, d.status) for d in structured.diagnoses] == [("gastrite", "suspected")]
    assert structured.follow_up_days is not None and structured.follow_up_days.value == 7
    assert structured.patient.name is not None and structured.patient.name.value == "Bob"
    assert structured.flags == []


def test_instructions_shorter_keeps_the_first_sentences_of_each_section() -> None:
    segments = _segments(PT_VET, with_speakers=True)
    full = generate_note(segments, "pt")
    short = generate_note(segments, "pt", instructions="Deixe a nota mais curta, por favor.")
    assert [s.label for s in short.sections] == [s.label for s in full.sections]
    for before, after in zip(full.sections, short.sections, strict=True):
        assert after.sentences == before.sentences[:2]
    assert short.structured == full.structured


@pytest.mark.parametrize(
    ("instructions", "absent"),
    [
        ("omit owner instructions", "owner_instructions"),
        ("Sem orientações ao tutor.", "owner_instructions"),
        ("sin seguimiento", "follow_up"),
        ("please remove the plan", "plan"),
    ],
)
def test_instructions_can_omit_a_section(instructions: str, absent: str) -> None:
    note = generate_note(_segments(PT_VET, with_speakers=True), "pt", instructions=instructions)
    labels = [s.label for s in note.sections]
    assert absent not in labels
    assert len(labels) == len(SECTION_LABELS) - 1
    assert [s.order for s in note.sections] == list(range(1, len(labels) + 1))


def test_instructions_the_rules_cannot_follow_are_ignored() -> None:
    segments = _segments(PT_VET, with_speakers=True)
    assert generate_note(segments, "pt", instructions="Write it like a poem") == generate_note(segments, "pt")
    assert generate_note(segments, "pt", instructions="   ") == generate_note(segments, "pt")


def test_min_words_threshold_is_configurable() -> None:
    turns: list[Turn] = [("patient", "Ele está vomitando desde ontem."), ("doctor", "Retorno em dois dias.")]
    with pytest.raises(TranscriptTooShort):
        generate_note(_segments(turns), "pt")
    note = generate_note(_segments(turns), "pt", min_words=4)
    assert note.section("chief_complaint") is not None
