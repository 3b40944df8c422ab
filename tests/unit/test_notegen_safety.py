"""Dose checks: doses out of the usual range, tenfold slips and dose/weight mismatches are flagged
on the note, never corrected; usual doses raise nothing. Consultations written for these tests."""

from __future__ import annotations

import pytest

from services.notegen.domain.generator import GeneratedNote, Medication, TranscriptSegment, generate_note
from services.notegen.domain.safety import check_medications

Turn = tuple[str, str]


def _note(turns: list[Turn], language: str = "pt", domain: str = "veterinary") -> GeneratedNote:
    segments = [
        TranscriptSegment(text, i * 6000, i * 6000 + 5000, speaker) for i, (speaker, text) in enumerate(turns)
    ]
    return generate_note(segments, language, domain=domain)


def _dog_visit(prescription: str, weight: str = "vinte quilos") -> list[Turn]:
    return [
        ("doctor", "Bom dia! O que aconteceu com o cachorro?"),
        ("patient", "Ele está mancando da pata de trás desde ontem e chora quando pisa."),
        ("doctor", f"Vamos examinar. Peso, {weight}. Temperatura trinta e oito e meio. O joelho está inchado."),
        ("doctor", "É uma artrite. Em cachorro isso é comum."),
        ("doctor", prescription),
        ("doctor", "Retorno em sete dias."),
    ]


def _codes(note: GeneratedNote) -> list[str]:
    return [flag.code for flag in note.structured.flags]


def test_tenfold_per_kg_dose_is_flagged_with_reason_and_provenance() -> None:
    note = _note(_dog_visit("Vou passar meloxicam, dois miligramas por quilo, pela boca, uma vez por dia, por cinco dias."))
    medication = note.structured.medications[0]
    assert (medication.dose, medication.unit) == (2, "mg/kg")  # never corrected
    assert _codes(note) == ["dose_tenfold"]
    flag = note.structured.flags[0]
    assert flag.severity == "high"
    assert flag.medication == "meloxicam"
    assert "0.1–0.2 mg/kg" in flag.message and "cães" in flag.message
    assert flag.source_segments == (4,)
    assert (flag.start_ms, flag.end_ms) == (24000, 29000)


def test_usual_dose_raises_no_flag() -> None:
    note = _note(_dog_visit("Vou passar meloxicam, zero vírgula um miligrama por quilo, pela boca, uma vez por dia, por cinco dias."))
    assert note.structured.medications[0].dose == pytest.approx(0.1)
    assert _codes(note) == []


def test_total_dose_is_checked_against_the_stated_weight() -> None:
    # 20 mg for a 20 kg dog is 1 mg/kg of meloxicam: five times the maximum.
    flagged = _note(_dog_visit("Vou passar meloxicam, vinte miligramas, pela boca, uma vez por dia."))
    assert _codes(flagged) == ["dose_tenfold"]
    assert "20 mg (1 mg/kg)" in flagged.structured.flags[0].message
    usual = _note(_dog_visit("Vou passar meloxicam, dois miligramas, pela boca, uma vez por dia."))
    assert _codes(usual) == []


def test_per_kg_dose_and_total_that_disagree_with_the_weight_are_flagged() -> None:
    note = _note(
        _dog_visit(
            "Vou passar metronidazol, quinze miligramas por quilo, ou seja, cem miligramas, pela boca, "
            "a cada doze horas, por cinco dias."
        )
    )
    assert _codes(note) == ["dose_weight_mismatch"]
    assert "15 mg/kg × 20 kg" in note.structured.flags[0].message
    consistent = _note(
        _dog_visit(
            "Vou passar metronidazol, quinze miligramas por quilo, ou seja, trezentos miligramas, pela boca, "
            "a cada doze horas, por cinco dias."
        )
    )
    assert _codes(consistent) == []


def test_moderately_high_dose_is_a_warning() -> None:
    note = _note(_dog_visit("Vou passar carprofeno, seis miligramas por quilo, pela boca, uma vez por dia."))
    assert _codes(note) == ["dose_above_range"]
    assert note.structured.flags[0].severity == "warning"


def test_per_kg_dose_without_a_weight_is_flagged() -> None:
    turns = [
        ("patient", "Ele está vomitando desde ontem."),
        ("doctor", "Vamos examinar. Temperatura trinta e nove. A barriga está sensível."),
        ("doctor", "É uma gastrite."),
        ("doctor", "Vou passar omeprazol, um miligrama por quilo, pela boca, uma vez por dia, por sete dias."),
    ]
    assert _codes(_note(turns)) == ["weight_missing"]


def test_species_matters_paracetamol_in_a_cat() -> None:
    turns = [
        ("patient", "She is limping and not eating since yesterday."),
        ("doctor", "Let me examine her. Weight four kilos. In cats this is often a bite abscess."),
        ("doctor", "This is an abscess on the left leg."),
        ("doctor", "I'll give paracetamol, fifty milligrams by mouth twice a day for three days."),
    ]
    note = _note(turns, "en")
    assert note.structured.patient.species is not None and note.structured.patient.species.value == "cat"
    assert _codes(note) == ["contraindicated_species"]
    assert note.structured.flags[0].severity == "high"


def test_rabbit_ranges_are_used_for_rabbits() -> None:
    turns = [
        ("patient", "Ele parou de comer desde ontem e está quietinho."),
        ("doctor", "Vamos examinar. Peso, dois quilos. Em coelho isso é urgente."),
        ("doctor", "É uma estase gastrointestinal."),
        ("doctor", "Vou passar meloxicam, zero vírgula cinco miligrama por quilo, pela boca, uma vez por dia, por cinco dias."),
    ]
    # 0.5 mg/kg is above a dog's range but usual for a rabbit.
    assert _codes(_note(turns)) == []


def test_adult_human_daily_maximum() -> None:
    turns = [
        ("patient", "I've had a headache and fever since yesterday."),
        ("doctor", "Let me examine you. Temperature thirty-eight point five. Your throat is red."),
        ("doctor", "I think this is a viral infection."),
        ("doctor", "Take paracetamol, one thousand five hundred milligrams every four hours, for three days."),
    ]
    note = _note(turns, "en", domain="human")
    assert _codes(note) == ["dose_above_range", "daily_dose_above_max"]
    assert "9000 mg a day" in note.structured.flags[1].message


def test_spanish_message_and_interval_check() -> None:
    turns = [
        ("patient", "Está cojeando desde hace tres días."),
        ("doctor", "Vamos a revisarla. Pesa diez kilos. Es una perra muy tranquila."),
        ("doctor", "Tiene una artritis en la rodilla."),
        ("doctor", "Le voy a dar meloxicam, cero coma uno miligramos por kilo, por boca, cada ocho horas, durante cinco días."),
    ]
    note = _note(turns, "es")
    assert _codes(note) == ["interval_too_short"]
    assert "cada 8 h" in note.structured.flags[0].message


def test_unknown_drugs_and_unconvertible_units_are_not_checked() -> None:
    medication = Medication(
        name="colírio X", dose=2, unit="drop", route="ophthalmic", frequency=None, duration_days=None,
        source_segments=(0,), start_ms=0, end_ms=1,
    )
    assert check_medications([medication], weight_kg=10, species="dog", language="pt") == []
    unknown = Medication(
        name="zylofen", dose=500, unit="mg/kg", route="oral", frequency=None, duration_days=None,
        source_segments=(0,), start_ms=0, end_ms=1,
    )
    assert check_medications([unknown], weight_kg=10, species="dog", language="pt") == []


def test_unknown_species_uses_the_widest_range() -> None:
    medication = Medication(
        name="meloxicam", dose=0.5, unit="mg/kg", route="oral", frequency=None, duration_days=None,
        source_segments=(3,), start_ms=10, end_ms=20, drug="meloxicam",
    )
    # Too much for a dog, usual for a rabbit: with no species said, nothing is flagged...
    assert check_medications([medication], weight_kg=2, species=None, language="en") == []
    # ...but a tenfold slip still is.
    tenfold = Medication(
        name="meloxicam", dose=10, unit="mg/kg", route="oral", frequency=None, duration_days=None,
        source_segments=(3,), start_ms=10, end_ms=20, drug="meloxicam",
    )
    flags = check_medications([tenfold], weight_kg=2, species=None, language="en")
    assert [f.code for f in flags] == ["dose_tenfold"]
    assert flags[0].source_segments == (3,)
