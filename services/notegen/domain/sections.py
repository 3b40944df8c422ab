"""The catalogue of note sections: stable labels, their order and localised titles.

Labels are language-independent identifiers shared with the evaluation corpus and the API; titles
are what a clinician reads. The catalogue is the single place that knows both, so generators only
ever deal in labels and ask here for the words.
"""

from __future__ import annotations

SECTION_LABELS: tuple[str, ...] = (
    "chief_complaint",
    "anamnesis",
    "physical_exam",
    "assessment",
    "plan",
    "prescriptions",
    "owner_instructions",
    "follow_up",
)
"""Every section label, in the order the sections appear in a note."""

SUPPORTED_LANGUAGES: tuple[str, ...] = ("pt", "en", "es")
"""Languages with their own titles; any other language is titled in ``FALLBACK_LANGUAGE``."""

FALLBACK_LANGUAGE = "en"

DOMAINS: tuple[str, ...] = ("veterinary", "human")
"""Consultation domains: a veterinary visit has an owner (tutor), a human one a patient."""

SECTION_TITLES: dict[str, dict[str, str]] = {
    "pt": {
        "chief_complaint": "Queixa principal",
        "anamnesis": "Anamnese",
        "physical_exam": "Exame físico",
        "assessment": "Avaliação / Diagnóstico",
        "plan": "Plano",
        "prescriptions": "Prescrições",
        "owner_instructions": "Orientações ao tutor",
        "follow_up": "Retorno",
    },
    "en": {
        "chief_complaint": "Chief complaint",
        "anamnesis": "History",
        "physical_exam": "Physical exam",
        "assessment": "Assessment",
        "plan": "Plan",
        "prescriptions": "Prescriptions",
        "owner_instructions": "Owner instructions",
        "follow_up": "Follow-up",
    },
    "es": {
        "chief_complaint": "Motivo de consulta",
        "anamnesis": "Anamnesis",
        "physical_exam": "Examen físico",
        "assessment": "Evaluación / Diagnóstico",
        "plan": "Plan",
        "prescriptions": "Prescripciones",
        "owner_instructions": "Indicaciones al tutor",
        "follow_up": "Seguimiento",
    },
}
"""Titles for veterinary consultations, by language then label."""

HUMAN_TITLE_OVERRIDES: dict[str, dict[str, str]] = {
    "pt": {"owner_instructions": "Orientações ao paciente"},
    "en": {"owner_instructions": "Patient instructions"},
    "es": {"owner_instructions": "Indicaciones al paciente"},
}
"""Titles that differ in human medicine, where the instructions go to the patient, not an owner."""


def normalise_language(language: str) -> str:
    """Reduce a language tag such as ``"pt-BR"`` or ``"ES_mx"`` to its lowercase primary subtag."""
    primary = language.strip().replace("_", "-").split("-", 1)[0]
    return primary.lower()


def title_language(language: str) -> str:
    """The language whose titles are used for ``language``: itself if supported, else English."""
    primary = normalise_language(language)
    return primary if primary in SUPPORTED_LANGUAGES else FALLBACK_LANGUAGE


def section_order(label: str) -> int:
    """Position of ``label`` in the catalogue, starting at 1.

    Raises:
        ValueError: ``label`` is not a section label.
    """
    try:
        return SECTION_LABELS.index(label) + 1
    except ValueError:
        raise ValueError(f"unknown section label: {label!r}") from None


def title_for(label: str, language: str, domain: str = "veterinary") -> str:
    """Localised title of section ``label`` for a consultation in ``language`` and ``domain``.

    Unknown languages get English titles. ``domain`` is ``"veterinary"`` or ``"human"``.

    Raises:
        ValueError: ``label`` is not a section label or ``domain`` is not a known domain.
    """
    section_order(label)
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain: {domain!r}")
    lang = title_language(language)
    if domain == "human":
        override = HUMAN_TITLE_OVERRIDES[lang].get(label)
        if override is not None:
            return override
    return SECTION_TITLES[lang][label]


def titles_for(language: str, domain: str = "veterinary") -> dict[str, str]:
    """Every section's title for ``language`` and ``domain``, in catalogue order."""
    return {label: title_for(label, language, domain) for label in SECTION_LABELS}
