"""Dose checks: a medication whose dose looks wrong for the patient is flagged on the note.

Nothing is ever corrected: a flag says what looks wrong and why, with the medication's provenance,
and the clinician decides. Checks, per medication:

``dose_tenfold`` (high)
    The dose per kg (stated, or the total divided by the stated weight) is at least five times
    above the usual maximum or below a fifth of the usual minimum for the species: the typical
    decimal-point slip ("dois miligramas por quilo" of meloxicam for a dog instead of 0,2).
``dose_above_range`` / ``dose_below_range`` (warning)
    Outside the usual range by more than the tolerance (25 % above, 20 % below) but less than the
    tenfold threshold.
``dose_weight_mismatch`` (warning)
    A per-kg dose and a total were both said and the total is not the per-kg dose times the
    stated weight (within 20 %).
``weight_missing`` (warning)
    A per-kg dose with no weight said in the consultation: the total cannot be checked.
``interval_too_short`` (warning)
    Given more often than the drug's usual shortest interval (NSAIDs once a day, say).
``daily_dose_above_max`` (warning)
    Adult human daily total above the usual maximum (paracetamol 4 g a day).
``contraindicated_species`` (high)
    A drug that is toxic or contraindicated for the species (paracetamol in cats).

Ranges come from :mod:`drugs` (Plumb's for dogs and cats, Carpenter's formulary for rabbits, BNF
for adults). A species the consultation does not name is checked against the widest range of
the veterinary species in the table, so only a gross error is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.notegen.domain.drugs import Drug, DoseRange, drug_by_name
from services.notegen.domain.numbers import format_number
from services.notegen.domain.structured import Medication, SafetyFlag

__all__ = ["TENFOLD_FACTOR", "check_medications"]

TENFOLD_FACTOR = 5.0
"""A dose this many times outside the usual range is taken for a decimal (tenfold) error."""
ABOVE_TOLERANCE = 1.25
BELOW_TOLERANCE = 0.8
MISMATCH_TOLERANCE = 0.2
VETERINARY_SPECIES = ("dog", "cat", "rabbit")

_SPECIES_NAMES = {
    "pt": {"dog": "cães", "cat": "gatos", "rabbit": "coelhos", "human": "adultos", None: "a espécie"},
    "en": {"dog": "dogs", "cat": "cats", "rabbit": "rabbits", "human": "adults", None: "the species"},
    "es": {"dog": "perros", "cat": "gatos", "rabbit": "conejos", "human": "adultos", None: "la especie"},
}

_MESSAGES: dict[str, dict[str, str]] = {
    "pt": {
        "dose_tenfold": "{name}: {dose} está {factor}× fora da faixa usual de {low}–{high} {unit} para {species}; possível erro de dez vezes (vírgula).",
        "dose_above_range": "{name}: {dose} está acima da faixa usual de {low}–{high} {unit} para {species}.",
        "dose_below_range": "{name}: {dose} está abaixo da faixa usual de {low}–{high} {unit} para {species}.",
        "dose_weight_mismatch": "{name}: {per_kg} mg/kg × {weight} kg dá {expected} mg, mas foi dito {total} mg.",
        "weight_missing": "{name}: dose por quilo sem peso informado na consulta; não foi possível conferir a dose total.",
        "interval_too_short": "{name}: a cada {interval} h é mais frequente que o intervalo usual de {min_interval} h.",
        "daily_dose_above_max": "{name}: {daily} mg por dia passa do máximo usual de {max_daily} mg por dia.",
        "contraindicated_species": "{name}: contraindicado em {species} ({reason}).",
    },
    "en": {
        "dose_tenfold": "{name}: {dose} is {factor}× outside the usual {low}–{high} {unit} for {species}; possible tenfold (decimal point) error.",
        "dose_above_range": "{name}: {dose} is above the usual {low}–{high} {unit} for {species}.",
        "dose_below_range": "{name}: {dose} is below the usual {low}–{high} {unit} for {species}.",
        "dose_weight_mismatch": "{name}: {per_kg} mg/kg × {weight} kg is {expected} mg, but {total} mg was said.",
        "weight_missing": "{name}: dose per kg with no weight stated in the consultation; the total dose could not be checked.",
        "interval_too_short": "{name}: every {interval} h is more often than the usual {min_interval} h interval.",
        "daily_dose_above_max": "{name}: {daily} mg a day exceeds the usual maximum of {max_daily} mg a day.",
        "contraindicated_species": "{name}: contraindicated in {species} ({reason}).",
    },
    "es": {
        "dose_tenfold": "{name}: {dose} está {factor}× fuera del rango habitual de {low}–{high} {unit} para {species}; posible error de diez veces (coma decimal).",
        "dose_above_range": "{name}: {dose} está por encima del rango habitual de {low}–{high} {unit} para {species}.",
        "dose_below_range": "{name}: {dose} está por debajo del rango habitual de {low}–{high} {unit} para {species}.",
        "dose_weight_mismatch": "{name}: {per_kg} mg/kg × {weight} kg da {expected} mg, pero se dijo {total} mg.",
        "weight_missing": "{name}: dosis por kilo sin peso indicado en la consulta; no se pudo comprobar la dosis total.",
        "interval_too_short": "{name}: cada {interval} h es más frecuente que el intervalo habitual de {min_interval} h.",
        "daily_dose_above_max": "{name}: {daily} mg al día supera el máximo habitual de {max_daily} mg al día.",
        "contraindicated_species": "{name}: contraindicado en {species} ({reason}).",
    },
}

_MASS_TO_MG = {"mg": 1.0, "mcg": 0.001, "g": 1000.0}


def _fmt(value: float) -> str:
    return format_number(round(value, 3))


def _flag(
    code: str,
    severity: str,
    medication: Medication,
    language: str,
    **values: object,
) -> SafetyFlag:
    templates = _MESSAGES.get(language, _MESSAGES["en"])
    message = templates[code].format(name=medication.name, **values)
    return SafetyFlag(
        code=code,
        severity=severity,
        message=message,
        medication=medication.name,
        source_segments=medication.source_segments,
        start_ms=medication.start_ms,
        end_ms=medication.end_ms,
    )


def _range_for(drug: Drug, species: str | None, per_kg: bool) -> tuple[DoseRange | None, str | None]:
    """The range to compare with, and the species it belongs to (``None``: the widest of all)."""
    if species in drug.ranges:
        dose_range = drug.ranges[species]
        return dose_range, species
    if species is None:
        ranges = [drug.ranges[s] for s in VETERINARY_SPECIES if s in drug.ranges]
        if per_kg and ranges:
            low = min(r.low for r in ranges)
            high = max(r.high for r in ranges)
            intervals = [r.min_interval_hours for r in ranges if r.min_interval_hours]
            return DoseRange(low, high, "mg/kg", min(intervals) if intervals else None), None
    return None, species


def _mass_mg(dose: float, unit_base: str) -> float | None:
    factor = _MASS_TO_MG.get(unit_base)
    return None if factor is None else dose * factor


def check_medications(
    medications: Sequence[Medication],
    *,
    weight_kg: float | None,
    species: str | None,
    language: str,
) -> list[SafetyFlag]:
    """Flags for every medication whose dose, interval or species looks wrong.

    ``species`` is a table key (``dog``, ``cat``, ``rabbit``, ``human``) or ``None`` when
    unknown; ``weight_kg`` the weight stated in the consultation. A medication's ``total_dose``
    (a total said beside its per-kg dose) is compared with the per-kg dose times the weight.
    Medications the table does not know, and doses in units that cannot be converted (tablets,
    drops, ml of a suspension of unknown strength), are not checked.
    """
    flags: list[SafetyFlag] = []
    lang = language if language in _MESSAGES else "en"
    names = _SPECIES_NAMES[lang]
    for medication in medications:
        drug = drug_by_name(medication.drug or "") or drug_by_name(medication.name.casefold())
        if drug is None:
            continue
        if species in drug.contraindicated:
            flags.append(
                _flag("contraindicated_species", "high", medication, lang,
                      species=names.get(species, species), reason=drug.contraindicated[species])
            )
            continue
        if medication.dose is None or not medication.unit:
            continue
        parts = medication.unit.split("/")
        base, per_kg = parts[0], "kg" in parts[1:]
        if "h" in parts[1:] or "day" in parts[1:]:
            continue  # rates and daily totals are not compared with per-dose ranges
        dose_mg = _mass_mg(medication.dose, base)
        if dose_mg is None:
            continue
        if per_kg and weight_kg is None and species != "human":
            flags.append(_flag("weight_missing", "warning", medication, lang))
        total = None if medication.total_dose is None else _mass_mg(medication.total_dose, base)
        if per_kg and weight_kg and total is not None:
            expected = dose_mg * weight_kg
            if abs(total - expected) > MISMATCH_TOLERANCE * expected:
                flags.append(
                    _flag("dose_weight_mismatch", "warning", medication, lang, per_kg=_fmt(dose_mg),
                          weight=_fmt(weight_kg), expected=_fmt(expected), total=_fmt(total))
                )
        dose_range, range_species = _range_for(drug, species, per_kg or weight_kg is not None)
        if dose_range is None:
            continue
        if dose_range.unit == "mg/kg":
            if per_kg:
                value, shown = dose_mg, f"{_fmt(dose_mg)} mg/kg"
            elif weight_kg:
                value = dose_mg / weight_kg
                shown = f"{_fmt(dose_mg)} mg ({_fmt(value)} mg/kg)"
            else:
                value = None
                shown = ""
        else:  # adult human totals
            value = None if per_kg else dose_mg
            shown = f"{_fmt(dose_mg)} mg"
        if value is not None:
            code, severity, factor = None, "warning", 1.0
            if value >= dose_range.high * TENFOLD_FACTOR:
                code, severity, factor = "dose_tenfold", "high", value / dose_range.high
            elif value <= dose_range.low / TENFOLD_FACTOR:
                code, severity, factor = "dose_tenfold", "high", dose_range.low / value
            elif value > dose_range.high * ABOVE_TOLERANCE:
                code = "dose_above_range"
            elif value < dose_range.low * BELOW_TOLERANCE:
                code = "dose_below_range"
            if code is not None:
                flags.append(
                    _flag(code, severity, medication, lang, dose=shown, factor=_fmt(round(factor, 1)),
                          low=_fmt(dose_range.low), high=_fmt(dose_range.high), unit=dose_range.unit,
                          species=names.get(range_species, range_species))
                )
        if (
            dose_range.min_interval_hours
            and medication.interval_hours
            and medication.interval_hours < dose_range.min_interval_hours * 0.75
        ):
            flags.append(
                _flag("interval_too_short", "warning", medication, lang,
                      interval=_fmt(medication.interval_hours),
                      min_interval=_fmt(dose_range.min_interval_hours))
            )
        if dose_range.max_daily_mg and medication.interval_hours and not per_kg:
            daily = dose_mg * 24 / medication.interval_hours
            if daily > dose_range.max_daily_mg * 1.001:
                flags.append(
                    _flag("daily_dose_above_max", "warning", medication, lang,
                          daily=_fmt(daily), max_daily=_fmt(dose_range.max_daily_mg))
                )
    return flags
