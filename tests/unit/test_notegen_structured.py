"""Structured facts read from a consultation: vitals, medications, diagnoses, follow-up, patient,
with their provenance. The consultations are written for these tests."""

from __future__ import annotations

import json

import pytest

from services.notegen.domain.generator import (
    Diagnosis,
    Fact,
    GeneratedNote,
    Medication,
    StructuredData,
    TranscriptSegment,
    generate_note,
)

Turn = tuple[str, str]


def _segments(turns: list[Turn], *, with_speakers: bool = True) -> list[TranscriptSegment]:
    """One segment per turn, 6 s apart, each 5 s long."""
    return [
        TranscriptSegment(text, i * 6000, i * 6000 + 5000, speaker if with_speakers else "unspecified")
        for i, (speaker, text) in enumerate(turns)
    ]


def _note(turns: list[Turn], language: str = "pt", *, domain: str = "veterinary", with_speakers: bool = True) -> GeneratedNote:
    return generate_note(_segments(turns, with_speakers=with_speakers), language, domain=domain)


def _med(note: GeneratedNote, name: str) -> Medication:
    found = [m for m in note.structured.medications if name in m.name.casefold()]
    assert len(found) == 1, [m.name for m in note.structured.medications]
    return found[0]


def _value(fact: Fact | None) -> float | str | None:
    return None if fact is None else fact.value


OPENING_PT: list[Turn] = [
    ("doctor", "Bom dia! Esse é o Rex? O que aconteceu com ele?"),
    ("patient", "Ele está com diarreia desde ontem e vomitou duas vezes hoje de manhã."),
]

# ---------------------------------------------------------------------------------------------
# Vitals
# ---------------------------------------------------------------------------------------------


def test_each_vital_is_read_with_its_unit_and_provenance() -> None:
    turns = OPENING_PT + [
        ("doctor", "Vamos examinar. Peso, vinte e dois vírgula quatro quilos. Temperatura trinta e nove e dois."),
        ("doctor", "Frequência cardíaca cento e dez batimentos por minuto. Respiração trinta por minuto."),
        ("doctor", "Parece uma gastroenterite. Retorno em cinco dias."),
    ]
    note = _note(turns)
    vitals = note.structured.vitals
    assert vitals.weight_kg is not None and vitals.weight_kg.value == pytest.approx(22.4)
    assert vitals.weight_kg.unit == "kg"
    assert vitals.weight_kg.text == "vinte e dois vírgula quatro quilos"
    assert vitals.weight_kg.source_segments == (2,)
    assert (vitals.weight_kg.start_ms, vitals.weight_kg.end_ms) == (12000, 17000)
    assert _value(vitals.temperature_c) == pytest.approx(39.2)
    assert _value(vitals.heart_rate_bpm) == 110
    assert _value(vitals.respiratory_rate_rpm) == 30
    assert vitals.respiratory_rate_rpm is not None and vitals.respiratory_rate_rpm.source_segments == (3,)


def test_a_corrected_weight_takes_the_corrected_value() -> None:
    turns = OPENING_PT + [
        ("doctor", "Vamos pesar. Quatorze quilos."),
        ("patient", "Quatorze? Ele tinha doze no mês passado."),
        ("doctor", "A balança estava com a caixa em cima. Não, desculpa, são oito quilos."),
        ("doctor", "Temperatura trinta e oito e meio."),
    ]
    vitals = _note(turns).structured.vitals
    assert _value(vitals.weight_kg) == 8
    assert vitals.weight_kg is not None and vitals.weight_kg.source_segments == (4,)


def test_the_scale_beats_the_owners_guess() -> None:
    turns = OPENING_PT + [
        ("doctor", "Quanto ele pesa, a senhora sabe?"),
        ("patient", "Uns dez quilos, eu acho."),
        ("doctor", "Onze e meio aqui na balança. Temperatura trinta e nove."),
    ]
    for with_speakers in (True, False):
        vitals = _note(turns, with_speakers=with_speakers).structured.vitals
        assert _value(vitals.weight_kg) == pytest.approx(11.5)


def test_past_weights_weight_changes_and_thresholds_are_not_measurements() -> None:
    turns: list[Turn] = [
        ("patient", "She has had a cough for a week. She weighed twenty kilos last year."),
        ("doctor", "Let me examine her. Weight today is eighteen kilos, that's two kilos down since last time."),
        ("doctor", "Heart rate one hundred. If her breathing goes over forty a minute, call us."),
    ]
    vitals = _note(turns, "en").structured.vitals
    assert _value(vitals.weight_kg) == 18
    assert _value(vitals.heart_rate_bpm) == 100
    assert vitals.respiratory_rate_rpm is None


def test_a_recounted_rate_keeps_its_label() -> None:
    turns: list[Turn] = [
        ("patient", "Está tosiendo mucho desde hace una semana."),
        ("doctor", "Vamos a revisarlo. Frecuencia respiratoria, cuarenta por minuto. No, espere, se movió."),
        ("doctor", "Treinta y dos por minuto. Temperatura treinta y nueve coma uno."),
    ]
    vitals = _note(turns, "es").structured.vitals
    assert _value(vitals.respiratory_rate_rpm) == 32
    assert _value(vitals.temperature_c) == pytest.approx(39.1)
    assert vitals.heart_rate_bpm is None


# ---------------------------------------------------------------------------------------------
# Medications
# ---------------------------------------------------------------------------------------------

PT_TREATMENT: list[Turn] = OPENING_PT + [
    ("doctor", "Vamos examinar. Peso, vinte quilos. Temperatura trinta e nove."),
    ("doctor", "É uma gastroenterite, provavelmente por algo que ele comeu."),
    (
        "doctor",
        "Vou passar metronidazol, quinze miligramas por quilo, pela boca, a cada doze horas, por sete dias. "
        "E maropitant, dois miligramas por quilo, embaixo da pele, agora, dose única.",
    ),
    ("patient", "Metronidazol de doze em doze horas, sete dias."),
    ("doctor", "Em casa, ofereça comida leve em porções pequenas. Retorno em uma semana."),
]


def test_prescription_fields_are_read() -> None:
    note = _note(PT_TREATMENT)
    metronidazole = _med(note, "metronidazol")
    assert (metronidazole.dose, metronidazole.unit) == (15, "mg/kg")
    assert metronidazole.route == "oral"
    assert metronidazole.interval_hours == 12
    assert metronidazole.frequency == "a cada doze horas"
    assert metronidazole.duration_days == 7
    assert metronidazole.drug == "metronidazole"
    assert metronidazole.source_segments == (4,)
    maropitant = _med(note, "maropitant")
    assert (maropitant.dose, maropitant.unit, maropitant.route) == (2, "mg/kg", "subcutaneous")
    assert maropitant.duration_days is None
    # The owner's read-back adds nothing.
    assert len(note.structured.medications) == 2


@pytest.mark.parametrize("with_speakers", [True, False])
def test_english_prescription_with_as_needed_and_food(with_speakers: bool) -> None:
    turns: list[Turn] = [
        ("doctor", "Hello. What brings you in today?"),
        ("patient", "I've had a sore knee for two weeks. I took some paracetamol but it didn't help."),
        ("doctor", "Let me examine you. The knee is swollen and tender. I think this is a sprain."),
        (
            "doctor",
            "I'm going to prescribe naproxen, five hundred milligrams twice a day with food, for ten days. "
            "And paracetamol one gram every six hours when you need it.",
        ),
        ("doctor", "Rest the knee and come back in two weeks if it's not better."),
    ]
    note = _note(turns, "en", domain="human", with_speakers=with_speakers)
    names = [m.name for m in note.structured.medications]
    assert names == ["naproxen", "paracetamol"]
    naproxen = _med(note, "naproxen")
    assert (naproxen.dose, naproxen.unit, naproxen.route, naproxen.interval_hours, naproxen.duration_days) == (
        500, "mg", "oral", 12, 10
    )
    paracetamol = _med(note, "paracetamol")
    assert (paracetamol.dose, paracetamol.unit, paracetamol.interval_hours, paracetamol.as_needed) == (1, "g", 6, True)
    assert _value(note.structured.follow_up_days) == 14


def test_spanish_eye_drops_and_tablet_strength() -> None:
    turns: list[Turn] = [
        ("patient", "Tiene el ojo rojo y le sale una lagaña desde el lunes."),
        ("doctor", "Vamos a revisarla. Pesa cuatro kilos. La conjuntiva está roja."),
        ("doctor", "Es una conjuntivitis bacteriana."),
        ("doctor", "Le pone colirio de tobramicina, dos gotas en cada ojo, cada ocho horas, durante diez días."),
        ("doctor", "Y doxiciclina, un comprimido de veinte miligramos, por boca, una vez al día, durante catorce días."),
        ("doctor", "La revisión es en diez días."),
    ]
    note = _note(turns, "es")
    drops = _med(note, "tobramicina")
    assert (drops.dose, drops.unit, drops.route, drops.interval_hours, drops.duration_days) == (2, "drop", "ophthalmic", 8, 10)
    doxy = _med(note, "doxiciclina")
    assert (doxy.dose, doxy.unit, doxy.route, doxy.interval_hours, doxy.duration_days) == (20, "mg", "oral", 24, 14)
    assert _value(note.structured.follow_up_days) == 10


def test_combination_infusion_and_routes() -> None:
    turns: list[Turn] = OPENING_PT + [
        ("doctor", "Vamos examinar. Peso, dez quilos. Ele está desidratado."),
        ("doctor", "É uma gastroenterite hemorrágica. Vai ficar internado."),
        ("doctor", "Ringer lactato na veia, quatro mililitros por quilo por hora."),
        ("doctor", "E amoxicilina com clavulanato, vinte miligramas por quilo, na veia, a cada oito horas."),
    ]
    note = _note(turns)
    fluids = _med(note, "ringer")
    assert (fluids.dose, fluids.unit, fluids.route, fluids.continuous) == (4, "ml/kg/h", "intravenous", True)
    combo = _med(note, "amoxicilina")
    assert combo.name == "amoxicilina com clavulanato"
    assert combo.drug == "amoxicillin-clavulanate"
    assert (combo.dose, combo.unit, combo.route, combo.interval_hours) == (20, "mg/kg", "intravenous", 8)


def test_drugs_from_the_history_or_not_given_are_not_medications() -> None:
    turns: list[Turn] = [
        ("patient", "Ela toma prednisolona, cinco miligramas uma vez por dia, faz um mês. E está coçando muito."),
        ("doctor", "Vamos examinar. Peso, doze quilos. A pele está vermelha."),
        ("doctor", "É uma dermatite alérgica."),
        ("doctor", "A prednisolona não precisa mais, fica suspensa. Normalmente eu daria antibiótico, mas não precisa."),
        ("doctor", "Vou passar oclacitinib, seis miligramas, pela boca, a cada doze horas, por catorze dias."),
    ]
    note = _note(turns)
    assert [m.name for m in note.structured.medications] == ["oclacitinib"]


def test_medications_are_listed_in_the_plan_in_the_words_said() -> None:
    note = _note(PT_TREATMENT)
    plan = note.section("plan")
    assert plan is not None
    assert plan.sentences[-1].text == "Metronidazol, maropitant."
    assert set(plan.sentences[-1].source_segments) == {4}


# ---------------------------------------------------------------------------------------------
# Diagnoses
# ---------------------------------------------------------------------------------------------


def _diagnoses(note: GeneratedNote) -> list[tuple[str, str]]:
    return [(d.text, d.status) for d in note.structured.diagnoses]


def test_diagnosis_stated() -> None:
    note = _note(PT_TREATMENT)
    assert _diagnoses(note) == [("gastroenterite", "stated")]


@pytest.mark.parametrize(
    ("sentence", "language", "expected"),
    [
        ("Suspeita de pancreatite aguda.", "pt", ("pancreatite aguda", "suspected")),
        ("Eu penso em uma insuficiência renal crônica.", "pt", ("insuficiência renal crônica", "suspected")),
        ("It looks like a urinary tract infection.", "en", ("urinary tract infection", "suspected")),
        ("This is a bacterial pneumonia.", "en", ("bacterial pneumonia", "stated")),
        ("Probablemente es una otitis externa.", "es", ("otitis externa", "suspected")),
        ("Tiene una dermatitis atópica.", "es", ("dermatitis atópica", "stated")),
    ],
)
def test_diagnosis_stated_or_suspected(sentence: str, language: str, expected: tuple[str, str]) -> None:
    opening = {
        "pt": [("patient", "Ele está vomitando e com dor na barriga desde ontem."), ("doctor", "Vamos examinar. Temperatura trinta e nove. Peso, oito quilos.")],
        "en": [("patient", "I've had a fever and pain for three days."), ("doctor", "Let me examine you. Temperature thirty-eight point five.")],
        "es": [("patient", "Se rasca mucho la oreja desde hace una semana."), ("doctor", "Vamos a revisarlo. Pesa diez kilos. Temperatura treinta y ocho coma cinco.")],
    }[language]
    note = _note([*opening, ("doctor", sentence)], language, domain="human" if language == "en" else "veterinary")
    assert _diagnoses(note) == [expected]
    diagnosis = note.structured.diagnoses[0]
    assert diagnosis.source_segments == (2,)


def test_negated_and_hypothetical_conditions_are_not_diagnoses() -> None:
    turns: list[Turn] = [
        ("patient", "Ele está indo toda hora na caixa de areia e faz pouco xixi."),
        ("doctor", "Vamos examinar. Peso, cinco quilos. A bexiga está pequena, sem obstrução."),
        ("doctor", "É uma cistite. Em gato macho isso pode virar obstrução, então fique atenta."),
    ]
    note = _note(turns)
    assert _diagnoses(note) == [("cistite", "stated")]


def test_a_confirmed_suspicion_becomes_stated() -> None:
    turns: list[Turn] = [
        ("patient", "She has been coughing at night for a month."),
        ("doctor", "Let me examine her. Heart rate one hundred and forty. There is a loud murmur."),
        ("doctor", "I suspect a mitral valve disease."),
        ("doctor", "The x-ray confirmed it: mitral valve disease with an enlarged heart."),
    ]
    note = _note(turns, "en")
    assert [(d.text, d.status) for d in note.structured.diagnoses] == [("mitral valve disease", "stated")]
    assert note.structured.diagnoses[0].source_segments == (2, 3)


# ---------------------------------------------------------------------------------------------
# Follow-up and patient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "language", "days"),
    [
        ("Retorno em sete dias.", "pt", 7),
        ("A próxima consulta é daqui a duas semanas.", "pt", 14),
        ("Os resultados saem em dois dias. Retorno em três dias.", "pt", 3),
        ("Come back in three months for a review.", "en", 90),
        ("If it's not better in five days, book another appointment.", "en", 5),
        ("La revisión es en diez días.", "es", 10),
        ("Não precisa marcar retorno. O próximo comprimido é daqui a trinta dias.", "pt", None),
    ],
)
def test_follow_up_days(sentence: str, language: str, days: float | None) -> None:
    turns: list[Turn] = [
        ("patient", {"pt": "Ele está mancando desde ontem.", "en": "I've had back pain since Monday.", "es": "Está cojeando desde ayer."}[language]),
        ("doctor", {"pt": "Vamos examinar. Peso, dez quilos.", "en": "Let me examine you. Heart rate eighty.", "es": "Vamos a revisarlo. Pesa diez kilos."}[language]),
        ("doctor", sentence),
    ]
    note = _note(turns, language)
    assert _value(note.structured.follow_up_days) == days


def test_patient_name_species_sex_age_and_breed() -> None:
    turns: list[Turn] = [
        ("doctor", "Boa tarde! Essa é a Luna? Quantos anos ela tem?"),
        ("patient", "Ela tem cinco anos. Não, espera, seis. É uma gata persa."),
        ("patient", "Ela está espirrando muito desde sábado."),
        ("doctor", "Vamos examinar. Peso, quatro quilos. Isso é muito comum em gatos."),
    ]
    patient = _note(turns).structured.patient
    assert _value(patient.name) == "Luna"
    assert _value(patient.species) == "cat"
    assert _value(patient.sex) == "female"
    assert patient.age is not None and (patient.age.value, patient.age.unit) == (6, "years")
    assert _value(patient.breed) == "persa"


def test_another_animal_in_the_story_is_not_the_patient() -> None:
    turns: list[Turn] = [
        ("doctor", "Bom dia! Esse é o Bidu?"),
        ("patient", "É ele. Ele comeu a ração do gato e agora está vomitando. O gato da vizinha também."),
        ("doctor", "Vamos examinar. Peso, dez quilos. É uma gastrite."),
    ]
    patient = _note(turns).structured.patient
    assert patient.species is None
    assert _value(patient.sex) == "male"


# ---------------------------------------------------------------------------------------------
# Provenance, serialisation, determinism
# ---------------------------------------------------------------------------------------------


def test_every_sentence_carries_segments_and_times() -> None:
    segments = _segments(PT_TREATMENT)
    note = generate_note(segments, "pt")
    for section in note.sections:
        assert section.sentences
        assert section.content == " ".join(s.text for s in section.sentences)
        for sentence in section.sentences:
            assert sentence.source_segments
            assert sentence.start_ms == min(segments[i].start_ms for i in sentence.source_segments)
            assert sentence.end_ms == max(segments[i].end_ms for i in sentence.source_segments)


def test_a_fact_split_across_segments_cites_the_segments_under_its_words() -> None:
    segments = [
        TranscriptSegment("Ele está vomitando desde ontem.", 0, 3000, "patient"),
        TranscriptSegment("Vamos examinar. A temperatura está", 3000, 6000, "doctor"),
        TranscriptSegment("trinta e nove e meio, e o peso", 6000, 8000, "doctor"),
        TranscriptSegment("doze quilos.", 8000, 9500, "doctor"),
    ]
    vitals = generate_note(segments, "pt").structured.vitals
    assert vitals.temperature_c is not None and vitals.temperature_c.value == pytest.approx(39.5)
    assert vitals.temperature_c.source_segments == (2,)
    assert (vitals.temperature_c.start_ms, vitals.temperature_c.end_ms) == (6000, 8000)
    assert vitals.weight_kg is not None and vitals.weight_kg.source_segments == (3,)


def test_structured_data_round_trips_through_json() -> None:
    note = _note(PT_TREATMENT)
    data = json.loads(json.dumps(note.structured.to_dict()))
    assert StructuredData.from_dict(data) == note.structured
    assert data["medications"][0]["name"] == "metronidazol"
    assert data["vitals"]["weight_kg"]["value"] == 20
    assert StructuredData.from_dict(None) == StructuredData()
    assert Diagnosis.from_dict(data["diagnoses"][0]).status == "stated"


def test_structured_extraction_is_deterministic() -> None:
    first = _note(PT_TREATMENT)
    second = _note(PT_TREATMENT)
    assert first.structured.to_dict() == second.structured.to_dict()
    assert first == second


def test_nothing_in_the_structured_data_is_invented() -> None:
    segments = _segments(PT_TREATMENT)
    note = generate_note(segments, "pt")
    said = " ".join(s.text for s in segments).casefold()
    facts = [f for f in vars(note.structured.vitals).values() if f is not None]
    facts += [f for f in vars(note.structured.patient).values() if f is not None]
    for fact in facts:
        assert fact.text.casefold() in said
    for medication in note.structured.medications:
        assert medication.name.casefold() in said
        assert medication.text.casefold() in said
    for diagnosis in note.structured.diagnoses:
        assert diagnosis.text.casefold() in said
