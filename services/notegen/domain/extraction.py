"""Reading structured facts out of a consultation's sentences: vitals, medications, diagnoses,
follow-up interval and who the patient is.

The generator hands over its sentences as :class:`Utterance` objects (text, speaker, the segments
each part of the text came from, whether it is a question or a read-back, the phase of the
consultation and the section it was placed in). Each extractor below is a small set of rules over
general clinical language in pt, en and es; values come only from the words, and every value keeps
the character span it was read from, so its provenance is the segments under that span.

Conventions shared by the rules:

* Matching is done on a folded copy of the text (lowercase, no accents) of the same length, so
  offsets found there are offsets in the original.
* When the same measurement is said twice, the last statement of the most trusted speaker wins:
  the clinician over the patient or owner (who guesses: "uns doze quilos, eu acho"), a measurement
  over a hedge. So a correction ("não, desculpa, são trinta vírgula cinco quilos"; the scale
  contradicting the owner's guess) replaces the first value. Values said about the past ("no ano
  passado ele pesava..."), lost or gained, or as thresholds ("se passar de quarenta") are not
  measurements.
* Questions are never facts; read-backs never add a medication.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.notegen.domain.drugs import DRUG_NAME_ENDINGS, DRUGS, PRODUCT_WORDS, drug_by_name
from services.notegen.domain.numbers import SpokenNumber, find_numbers, parse_number
from services.notegen.domain.structured import Diagnosis, Fact, Medication, Patient, Vitals

__all__ = [
    "SegmentTimes",
    "Utterance",
    "extract_diagnoses",
    "extract_follow_up_days",
    "extract_medications",
    "extract_patient",
    "extract_vitals",
    "fold_aligned",
]


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentTimes:
    """Start and end of one transcript segment, in milliseconds."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Utterance:
    """One sentence of the consultation as the extractors see it.

    ``pieces`` maps the text to segments: ``(offset, segment index)`` pairs, in order, meaning
    that the text from ``offset`` up to the next piece's offset came from that segment.
    """

    index: int
    text: str
    speaker: str
    pieces: tuple[tuple[int, int], ...]
    question: bool = False
    readback: bool = False
    phase: str = "history"
    section: str | None = None

    @property
    def by_patient(self) -> bool:
        return self.speaker == "patient"


def fold_aligned(text: str) -> str:
    """``text`` lowercased and without accents, with every character kept in place."""
    out: list[str] = []
    for char in text:
        decomposed = unicodedata.normalize("NFKD", char.lower())
        bare = "".join(c for c in decomposed if not unicodedata.combining(c))
        out.append(bare if len(bare) == 1 else char.lower()[:1] or " ")
    return "".join(out)


def _cite(
    utterance: Utterance, start: int, end: int, times: Sequence[SegmentTimes]
) -> tuple[tuple[int, ...], int, int]:
    """Segments under ``text[start:end]`` of an utterance and their time range."""
    chosen: list[int] = []
    pieces = utterance.pieces
    for k, (offset, segment) in enumerate(pieces):
        next_offset = pieces[k + 1][0] if k + 1 < len(pieces) else len(utterance.text) + 1
        if offset < max(end, start + 1) and next_offset > start:
            chosen.append(segment)
    if not chosen:
        chosen = [pieces[0][1]] if pieces else []
    chosen = sorted(set(chosen))
    if not chosen:
        return (), 0, 0
    return (
        tuple(chosen),
        min(times[i].start_ms for i in chosen),
        max(times[i].end_ms for i in chosen),
    )


def _cite_many(
    spans: Sequence[tuple[Utterance, int, int]], times: Sequence[SegmentTimes]
) -> tuple[tuple[int, ...], int, int]:
    segments: set[int] = set()
    for utterance, start, end in spans:
        segments.update(_cite(utterance, start, end, times)[0])
    if not segments:
        return (), 0, 0
    ordered = tuple(sorted(segments))
    return ordered, min(times[i].start_ms for i in ordered), max(times[i].end_ms for i in ordered)


def _fact(
    value: float | str,
    unit: str | None,
    utterance: Utterance,
    start: int,
    end: int,
    times: Sequence[SegmentTimes],
) -> Fact:
    segments, start_ms, end_ms = _cite(utterance, start, end, times)
    return Fact(
        value=value,
        unit=unit,
        source_segments=segments,
        start_ms=start_ms,
        end_ms=end_ms,
        text=utterance.text[start:end].strip(),
    )


def _rx(*alternatives: str) -> str:
    """A whole-word alternation over folded text."""
    body = "|".join(sorted(alternatives, key=len, reverse=True))
    return rf"(?<![\w])(?:{body})(?![\w])"


# Clause breaks inside a sentence.
_CLAUSE = re.compile(r"[,;:()]|\.\.\.|…|\s-\s")

_HEDGES = re.compile(
    _rx(
        "uns", "umas", "uns", "mais ou menos", "eu acho", "acho que", "acho", "about", "around",
        "roughly", "i think", "maybe", "unos", "unas", "mas o menos", "creo", "creo que",
        "aproximadamente", "approximately", "cerca de", "quase", "almost", "casi",
    )
)
_CORRECTION = re.compile(
    _rx(
        "nao desculpa", "desculpa", "nao espera", "espera", "nao perai", "quer dizer",
        "mentira", "na verdade", "corrigindo", "no sorry", "sorry", "i mean", "actually",
        "wait", "no wait", "no perdon", "perdon", "digo", "mejor dicho", "en realidad",
        "contei errado", "conte errado", "i miscounted",
    )
)

# ---------------------------------------------------------------------------------------------
# Vitals
# ---------------------------------------------------------------------------------------------

_WEIGHT_UNIT = re.compile(r"\s*(?:quilos?|quilogramas?|kgs?|kilos?|kilogramos?|kilograms?)(?![\w])")
_HR_UNIT = re.compile(r"\s*(?:batimentos|batidas|bpm|beats|latidos|pulsaciones|lpm)(?![\w])")
_RR_UNIT = re.compile(
    r"\s*(?:respiracoes|movimentos respiratorios|mrpm|rpm|breaths|respiraciones|incursoes)(?![\w])"
)
_TEMP_UNIT = re.compile(r"\s*(?:graus|degrees|grados|°c|ºc)(?![\w])")
_PER_MINUTE = re.compile(r"\s*(?:(?:por|per|a|al|each|every)\s+minut[oe]s?|/\s*min)(?![\w])")

_LABELS: dict[str, re.Pattern[str]] = {
    "weight_kg": re.compile(
        _rx("peso", "pesa", "pesando", "pesou", "pesamos", "weight", "weighs", "weighing",
            "weighed", "pesa", "pesaba", "na balanca", "on the scale", "en la bascula",
            "en la balanza")
    ),
    "temperature_c": re.compile(_rx("temperatura", "temperature", "temp", "temperatura retal")),
    "heart_rate_bpm": re.compile(
        _rx("coracao", "frequencia cardiaca", "fc", "heart rate", "pulse", "pulso", "heart",
            "corazon", "frecuencia cardiaca", "batimentos")
    ),
    "respiratory_rate_rpm": re.compile(
        _rx("respiracao", "frequencia respiratoria", "fr", "respiratory rate", "resp rate",
            "respirations", "respiration", "breathing rate", "respiracion",
            "frecuencia respiratoria", "movimentos respiratorios")
    ),
}
_SCALE_AFTER = re.compile(r"^[^.?!,;]{0,25}?" + _rx("na balanca", "on the scale", "en la bascula", "en la balanza"))

_RANGES: dict[str, tuple[float, float]] = {
    "weight_kg": (0.02, 1500.0),
    "temperature_c": (30.0, 45.0),
    "heart_rate_bpm": (10.0, 450.0),
    "respiratory_rate_rpm": (2.0, 250.0),
}
# Words that put a value in the past, in someone else's hands, or make it a change or a
# threshold rather than today's measurement.
_NOT_MEASURED = re.compile(
    _rx(
        "ano passado", "mes passado", "semana passada", "last time", "last year", "last month",
        "last week", "last visit", "since last", "ficha", "tinha", "tava com", "estava com",
        "pesava", "used to", "was", "were", "down", "up from", "perdeu", "perdio", "perdido",
        "lost", "ganhou", "gained", "engordou", "emagreceu", "subiu", "baixou", "el ano pasado",
        "la ultima vez", "da ultima vez", "em casa", "en casa", "at home", "farmacia",
        "pharmacy", "se passar", "passar de", "acima de", "abaixo de", "mais de", "menos de",
        "above", "below", "over", "under", "more than", "less than", "mas de", "menos de",
        "por encima", "por debajo", "if", "se", "si", "caso", "quando", "when", "cuando",
        "deveria", "should", "deberia", "normal e", "normal is", "ideal", "meta", "target",
        "antes", "before", "had", "tenia", "pesaba",
    )
)


@dataclass
class _Reading:
    field: str
    value: float
    trust: float
    order: tuple[int, int]
    utterance: Utterance
    start: int
    end: int


def _number_kind_from_unit(folded: str, number: SpokenNumber) -> tuple[str | None, int]:
    """The vital a number's unit names, and where the unit ends."""
    after = folded[number.end :]
    for name, pattern in (
        ("weight_kg", _WEIGHT_UNIT),
        ("heart_rate_bpm", _HR_UNIT),
        ("respiratory_rate_rpm", _RR_UNIT),
        ("temperature_c", _TEMP_UNIT),
    ):
        match = pattern.match(after)
        if match:
            end = number.end + match.end()
            if name in ("heart_rate_bpm", "respiratory_rate_rpm"):
                per = _PER_MINUTE.match(folded[end:])
                if per:
                    end += per.end()
            return name, end
    per = _PER_MINUTE.match(after)
    if per:
        return "per_minute", number.end + per.end()
    return None, number.end


def _last_label(window: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern in _LABELS.items():
        for match in pattern.finditer(window):
            if best is None or match.start() >= best[0]:
                best = (match.start(), name)
    return best[1] if best else None


def extract_vitals(
    utterances: Sequence[Utterance], language: str, times: Sequence[SegmentTimes]
) -> Vitals:
    """Weight, temperature, heart and respiratory rate as finally measured.

    A number is a vital when its unit says so ("trinta vírgula cinco quilos", "cento e vinte
    batimentos") or when a label stands before it with no other number between ("Temperatura
    trinta e nove e quatro", "Heart rate ninety-six", "Coração cento e oitenta"). A rate "por
    minuto" with no label takes the last rate label said ("Frequência respiratória, quarenta por
    minuto. Não, espera, contei errado... Trinta e seis por minuto.").
    """
    readings: list[_Reading] = []
    last_rate_label: tuple[int, str] | None = None
    for utterance in utterances:
        if utterance.question:
            continue
        folded = fold_aligned(utterance.text)
        numbers = find_numbers(utterance.text, language)
        previous_end = 0
        previous_field: str | None = None
        for k, number in enumerate(numbers):
            window = folded[previous_end : number.start]
            unit_field, unit_end = _number_kind_from_unit(folded, number)
            label = _last_label(window)
            field_name: str | None = None
            rates = ("heart_rate_bpm", "respiratory_rate_rpm")
            if unit_field and unit_field != "per_minute":
                # A rate's label beats a rate's unit ("respiração, trinta movimentos").
                field_name = label if unit_field in rates and label in rates else unit_field
            elif label is not None:
                field_name = label
            elif unit_field == "per_minute" and last_rate_label is not None:
                if utterance.index - last_rate_label[0] <= 4:
                    field_name = last_rate_label[1]
            elif _SCALE_AFTER.match(folded[number.end :]):
                field_name = "weight_kg"
            elif _CORRECTION.search(window):
                # "Peso, doze quilos. Não, desculpa, treze.": the correction keeps the field.
                if previous_field is not None:
                    field_name = previous_field
                elif readings and utterance.index - readings[-1].utterance.index <= 1:
                    field_name = readings[-1].field
            previous_end = unit_end
            if field_name is None:
                continue
            if field_name in rates:
                last_rate_label = (utterance.index, field_name)
            previous_field = field_name
            low, high = _RANGES[field_name]
            if not low <= number.value <= high:
                continue
            # The clause the number sits in, from its label (or the clause start) on.
            clause_start = max(
                (m.end() for m in _CLAUSE.finditer(folded, 0, number.start)), default=0
            )
            clause_end_match = _CLAUSE.search(folded, unit_end)
            clause_end = clause_end_match.start() if clause_end_match else len(folded)
            context = folded[clause_start:clause_end]
            sentence_context = folded[: number.start]
            if _NOT_MEASURED.search(context) or (
                field_name == "weight_kg" and re.search(_rx("ficha", "last time", "ano passado", "mes passado"), sentence_context)
            ):
                continue
            trust = 1.0 if utterance.by_patient else 2.0
            if _HEDGES.search(folded[clause_start : number.start]) or _HEDGES.search(folded[unit_end : unit_end + 12]):
                trust -= 0.5
            readings.append(
                _Reading(
                    field=field_name,
                    value=number.value,
                    trust=trust,
                    order=(utterance.index, number.start),
                    utterance=utterance,
                    start=number.start,
                    end=unit_end,
                )
            )
    chosen: dict[str, Fact] = {}
    units = {"weight_kg": "kg", "temperature_c": "°C", "heart_rate_bpm": "bpm", "respiratory_rate_rpm": "rpm"}
    for field_name in Vitals.FIELDS:
        candidates = [r for r in readings if r.field == field_name]
        if not candidates:
            continue
        best = max(candidates, key=lambda r: (r.trust, r.order))
        chosen[field_name] = _fact(
            best.value, units[field_name], best.utterance, best.start, best.end, times
        )
    return Vitals(**chosen)


# ---------------------------------------------------------------------------------------------
# Medications
# ---------------------------------------------------------------------------------------------

_DOSE_UNITS: tuple[tuple[str, str], ...] = (
    ("mg", r"mili?gramas?|miligramos?|milligrams?|mgs?"),
    ("mcg", r"microgramas?|microgramos?|micrograms?|mcg|ug"),
    ("g", r"gramas?|gramos?|grams?"),
    ("ml", r"mililitros?|millilit(?:er|re)s?|ml|cc"),
    ("IU", r"unidades?|units?|ui|iu"),
    ("drop", r"gotas?|gotinhas?|drops?"),
    ("tablet", r"comprimidos?|tablets?|pills?|pastillas?|pilulas?"),
    ("capsule", r"capsulas?|capsules?"),
    ("dose", r"doses?|dosis"),
    ("puff", r"puffs?|jatos?|borrifadas?|inalaciones"),
)
_DOSE_UNIT = re.compile(
    r"\s*(?:de\s+|of\s+)?(" + "|".join(f"(?P<{code}>{rx})" for code, rx in _DOSE_UNITS) + r")(?![\w])"
)
_PER_KG = re.compile(
    r"\s*(?:/|por|per|a|al|cada)\s*(?:quilo|quilograma|kg|kilo|kilogramo|kilogram)s?"
    r"(?:\s+de\s+peso(?:\s+vivo)?|\s+of\s+(?:body\s+)?weight)?(?![\w])"
)
_PER_HOUR = re.compile(r"\s*(?:/|por|per|an|a|la)\s*(?:hora|hour|h)(?![\w])")
_PER_DAY = re.compile(r"\s*(?:/|por|per|a|al)\s*(?:dia|day)(?![\w])")
_MASS_UNITS = frozenset({"mg", "mcg", "g", "ml", "IU"})
_STRENGTH = re.compile(r"\s*(?:de|of|da|del)\s*$")

_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("oral", re.compile(_rx(
        "pela boca", "por boca", "by mouth", "via oral", "oral", "orally", "por via oral",
        "per os", "vo", "pela boquinha", "por la boca", "oralmente"))),
    ("subcutaneous", re.compile(_rx(
        "embaixo da pele", "debaixo da pele", "sob a pele", "under the skin", "debajo de la piel",
        "bajo la piel", r"subcutane\w*", r"subcutaneous\w*", "sc", "sq", r"subcut\w*"))),
    ("intravenous", re.compile(_rx(
        "na veia", "into the vein", "in the vein", "en la vena", "por la vena", "pela veia",
        r"intraven\w*", "iv", "endovenos[oa]", "ev"))),
    ("intramuscular", re.compile(_rx(
        "no musculo", "into the muscle", "in the muscle", "en el musculo", r"intramuscular\w*",
        "im"))),
    ("otic", re.compile(_rx(
        "no ouvido", "nos ouvidos", "na orelha", "nas orelhas", "in the ear", "in each ear",
        "in the ears", "en el oido", "en los oidos", "en la oreja", r"otologic\w*", "otic",
        "otico", "otica", "auricular"))),
    ("ophthalmic", re.compile(_rx(
        "no olho", "nos olhos", "em cada olho", "in the eye", "in each eye", "in the eyes",
        "en el ojo", "en los ojos", "en cada ojo", "colirio", "eye drops?", r"oftalmic\w*",
        r"ophthalmic\w*"))),
    ("topical", re.compile(_rx(
        "na pele", "on the skin", "en la piel", r"topic\w*", r"topical\w*", "na lesao",
        "on the rash", "on the wound", "na ferida"))),
    ("inhaled", re.compile(_rx(r"inalad\w*", "inhaler", "inhaled", "bombinha", r"inhalad\w*", "nebuliz\\w*"))),
    ("rectal", re.compile(_rx("via retal", "rectal", "rectally", r"retal\w*", "supositorio", "suppository"))),
    ("intranasal", re.compile(_rx("no nariz", "in the nose", "en la nariz", "intranasal"))),
)
# Ways of saying a medicine goes by mouth without naming the route.
_ORAL_HINTS = re.compile(_rx(
    "com comida", "com a comida", "na comida", "com a racao", "na racao", "em jejum",
    "antes de comer", "depois de comer", "dentro de um sache", "with food", "with meals",
    "with breakfast", "with dinner", "with breakfast and dinner", "before meals", "after meals",
    "on an empty stomach", "con la comida", "con comida", "en ayunas", "antes de comer",
    "despues de comer", "in food", "de estomago vacio",
))

_INTERVAL = re.compile(
    r"(?<![\w])(?:a\s+cada|cada|every|de)\s+(?P<n>[\w -]+?)\s+(?:em\s+(?P=n)\s+)?"
    r"(?P<unit>horas?|hours?|hrs?|dias?|days?|semanas?|weeks?|mes(?:es)?|months?)(?![\w])"
)
_TIMES_PER_DAY = re.compile(
    r"(?<![\w])(?P<n>[\w]+(?:\s+[\w]+)?)\s+(?:vez|vezes|times|veces|x)\s+"
    r"(?:ao|por|a|al|per|cada|every)\s+(?:dia|day|daily)(?![\w])"
    r"|(?<![\w])(?P<n2>once|twice|thrice|three\s+times|four\s+times)\s+(?:a\s+day|daily|per\s+day)(?![\w])"
)
_DAILY = re.compile(_rx(
    "todo dia", "todos os dias", "every day", "daily", "diariamente", "cada dia",
    "todos los dias", "at night", "a noite", "de noite", "por la noche", "at bedtime",
    "antes de dormir", "de manha", "in the morning", "por la manana", "pela manha",
))
_WEEKLY = re.compile(_rx("uma vez por semana", "once a week", "weekly", "semanal", "una vez a la semana", "toda semana"))
_MONTHLY = re.compile(_rx(
    "todo mes", "uma vez por mes", "uma vez ao mes", "once a month", "monthly", "mensal",
    "una vez al mes", "cada mes", "todo mes",
))
_AS_NEEDED = re.compile(_rx(
    "se necessario", "se precisar", "quando precisar", "se tiver dor", "se sentir dor",
    "when you need it", "as needed", "if needed", "when needed", "if required", "prn",
    "si lo necesita", "si es necesario", "cuando lo necesite", "si hace falta",
    "only when you need it", "em caso de dor", "in case of pain", "en caso de dolor",
))
_CONTINUOUS = re.compile(_rx(
    "infusao continua", "continuous infusion", "constant rate infusion", "infusion continua",
    "infusion constante", "cri",
))
_DURATION = re.compile(
    r"(?<![\w])(?:por|durante|pelos|pelas|for|for up to|up to|ate|por mais|for another|"
    r"por otros|durante otros)\s+(?:uns\s+|umas\s+|about\s+|unos\s+)?(?P<n>[\w -]+?)\s+"
    r"(?P<unit>dias?|days?|semanas?|weeks?|mes(?:es)?|months?|anos?|years?)(?![\w])"
)
_ONGOING = re.compile(_rx(
    "uso continuo", "de uso continuo", "long term", "long-term", "sem parar", "o ano inteiro",
    "for life", "para sempre", "indefinitely", "ongoing", "pra sempre", "toda a vida",
    "de por vida", "uso cronico", "continuamente",
))
_REPEAT = re.compile(_rx("repito", "repete", "repetir", "repeat", "repetimos", "repite", "repeats", "repetimos"))
_CONDITION = re.compile(_rx("se", "if", "si", "caso"))

_NEGATED_PRESCRIPTION = re.compile(_rx(
    "nao vou passar", "nao precisa", "nao precisa mais", "suspens[ao]", "suspender", "parar",
    "para de dar", "stop", "stopped", "don't need", "no need", "suspende", "suspender",
    "no necesita", "instead of", "em vez de", "en lugar de", "en vez de",
))

_WORD_COUNT = {"once": 1, "twice": 2, "thrice": 3, "three times": 3, "four times": 4}
_TIME_FACTORS = {
    "hora": 1 / 24, "horas": 1 / 24, "hour": 1 / 24, "hours": 1 / 24, "hr": 1 / 24, "hrs": 1 / 24,
    "dia": 1, "dias": 1, "day": 1, "days": 1,
    "semana": 7, "semanas": 7, "week": 7, "weeks": 7,
    "mes": 30, "meses": 30, "month": 30, "months": 30,
    "ano": 365, "anos": 365, "year": 365, "years": 365,
}


_LEADING_HEDGE = re.compile(
    r"^\s*(?:uns|umas|unos|unas|about|around|up to|mais|another|otros|otras|outros|outras)\s+",
    re.IGNORECASE,
)


def _count(text: str, language: str) -> float | None:
    """The number ``text`` says, when it says nothing but a number ("doze", "uns dois", "12")."""
    return parse_number(_LEADING_HEDGE.sub("", text), language)


@dataclass
class _DrugMention:
    name: str
    start: int
    end: int
    route_hint: str
    product: bool


def _drug_names_regex() -> re.Pattern[str]:
    names = {name for drug in DRUGS for name in drug.names}
    names |= set(PRODUCT_WORDS)
    body = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{body})(?![\w])")


_DRUG_NAMES = _drug_names_regex()
_WORD_RE = re.compile(r"[a-z][a-z0-9-]+")
_JOIN = re.compile(r"^\s*(?:\+|com|with|con|e|and|y|/|mais|plus)\s*$")
_OF = re.compile(r"^\s*(?:de|do|da|of|del|com|with|con)\s*$")
# Words that may follow a product name as part of it ("quádrupla felina").
_NAME_QUALIFIERS = frozenset({
    "felina", "felino", "feline", "canina", "canino", "canine", "lactato", "otologica",
    "otologico", "oftalmica", "oftalmico", "forte", "plus", "retard", "de recuperacao",
})


def _find_drugs(folded: str) -> list[_DrugMention]:
    mentions: list[_DrugMention] = []
    for match in _DRUG_NAMES.finditer(folded):
        name = " ".join(match.group().split())
        product = name in PRODUCT_WORDS
        mentions.append(_DrugMention(name, match.start(), match.end(), PRODUCT_WORDS.get(name, ""), product))
    covered = [(m.start, m.end) for m in mentions]
    for match in _WORD_RE.finditer(folded):
        word = match.group()
        if len(word) < 6 or not word.endswith(DRUG_NAME_ENDINGS):
            continue
        if any(s <= match.start() < e for s, e in covered):
            continue
        mentions.append(_DrugMention(word, match.start(), match.end(), "", False))
    mentions.sort(key=lambda m: m.start)
    return mentions


_PRESCRIBING = re.compile(_rx(
    "vou passar", "vou receitar", "vou prescrever", "prescrevo", "vou dar", "vou te dar",
    "vou aplicar", "receito", "prescribe", "prescribing", "start", "starting", "i'll give",
    "we'll give", "give", "take", "le voy a dar", "le receto", "receto", "le doy", "le pongo",
    "vamos a dar", "le damos", "empezamos con", "comecamos com",
))
_NOT_DRUG_WORDS = frozenset({
    "passar", "receitar", "prescrever", "aplicar", "tomar", "toma", "dose", "doses", "dosis",
    "cada", "every", "prescribe", "start", "give", "take", "dar", "doy", "pongo", "receto",
    "agora", "depois", "primeiro", "segundo", "terceiro", "first", "second", "third", "then",
    "primero", "despues", "luego", "tambem", "also", "tambien", "remedio", "medicine",
    "medicamento", "medication", "tablet", "comprimido", "pastilla", "uns", "umas", "about",
    "unos", "unas", "dele", "dela", "dale", "ponga", "coloca", "coloque", "casa", "home",
})


def _unlisted_drugs(folded: str, language: str, text: str, known: list[_DrugMention]) -> list[_DrugMention]:
    """A word said right before a dose in a prescribing sentence ("vou passar oclacitinib, seis
    miligramas"): a drug the table does not list."""
    if not _PRESCRIBING.search(folded):
        return []
    found: list[_DrugMention] = []
    for dose in _doses(text, folded, language, 0, len(text)):
        if dose.unit.split("/")[0] not in _MASS_UNITS:
            continue
        before = re.search(r"([a-z][a-z-]{4,})\s*,?\s*$", folded[: dose.start])
        if not before:
            continue
        word = before.group(1)
        if word in _NOT_DRUG_WORDS or any(m.start <= before.start(1) < m.end for m in known):
            continue
        found.append(_DrugMention(word, before.start(1), before.end(1), "", False))
    return found


def _group_mentions(folded: str, mentions: list[_DrugMention]) -> list[_DrugMention]:
    """Join combinations ("clotrimazol com gentamicina e betametasona") into one mention and let
    a product word before "de <drug>" ("colírio de tobramicina") give way to the drug."""
    grouped: list[_DrugMention] = []
    for mention in mentions:
        if grouped:
            last = grouped[-1]
            between = folded[last.end : mention.start]
            if not mention.product and last.product and _OF.match(between) or (
                not mention.product and last.product and re.fullmatch(r"\s*(?:\w+\s+)?(?:de|of|del)\s*", between)
            ):
                # "colírio de tobramicina", "pomada otológica de clotrimazol": the product names
                # the form, the drug names the medicine.
                grouped[-1] = _DrugMention(
                    mention.name, last.start, mention.end, last.route_hint or mention.route_hint, False
                )
                continue
            if not mention.product and not last.product and _JOIN.match(between):
                grouped[-1] = _DrugMention(
                    f"{last.name} + {mention.name}", last.start, mention.end, last.route_hint, False
                )
                continue
            if mention.product and last.product and re.fullmatch(r"\s*", between):
                grouped[-1] = _DrugMention(
                    f"{last.name} {mention.name}", last.start, mention.end, last.route_hint or mention.route_hint, True
                )
                continue
        grouped.append(mention)
    return grouped


def _display_name(text: str, folded: str, mention: _DrugMention) -> str:
    """The medication's name in the words said: the drug(s), or the product with a qualifier."""
    if mention.product:
        end = mention.end
        rest = folded[end:]
        qualifier = re.match(r"\s+([a-z]+)", rest)
        if qualifier and qualifier.group(1) in _NAME_QUALIFIERS:
            end += qualifier.end()
        return text[mention.start : end].strip()
    parts = [p.strip() for p in mention.name.split("+")]
    if len(parts) == 1:
        # Find the drug's own words (the span may start at a product word).
        match = re.search(re.escape(parts[0]).replace(r"\ ", r"\s+"), folded[mention.start : mention.end])
        if match:
            return text[mention.start + match.start() : mention.start + match.end()]
        return parts[0]
    names: list[str] = []
    for part in parts:
        match = re.search(
            r"(?<![\w])" + re.escape(part).replace(r"\ ", r"\s+") + r"(?![\w])",
            folded[mention.start : mention.end],
        )
        names.append(text[mention.start + match.start() : mention.start + match.end()] if match else part)
    return " + ".join(names)


@dataclass
class _Dose:
    value: float
    unit: str
    start: int
    end: int
    count_of: float | None = None  # "um comprimido de dez miligramas": 1 tablet


def _doses(text: str, folded: str, language: str, start: int, end: int) -> list[_Dose]:
    found: list[_Dose] = []
    for number in find_numbers(text, language):
        if number.start < start or number.start >= end:
            continue
        match = _DOSE_UNIT.match(folded, number.end)
        if not match:
            continue
        code = next(code for code, _ in _DOSE_UNITS if match.group(code))
        unit_end = match.end()
        unit = code
        per = _PER_KG.match(folded, unit_end)
        if per:
            unit += "/kg"
            unit_end = per.end()
        if code in _MASS_UNITS:
            rate = _PER_HOUR.match(folded, unit_end)
            if rate:
                unit += "/h"
                unit_end = rate.end()
            else:
                daily = _PER_DAY.match(folded, unit_end)
                if daily and "/kg" in unit:
                    unit += "/day"
                    unit_end = daily.end()
        value = number.value
        # "dois quilos e meio" style halves after the unit: "dois comprimidos e meio".
        half = re.match(r"\s+(?:e|y|and a)\s+(?:meio|meia|medio|media|half)(?![\w])", folded[unit_end:])
        if half:
            value += 0.5
            unit_end += half.end()
        found.append(_Dose(value, unit, number.start, unit_end))
    # "um comprimido de dez miligramas" -> 10 mg (one tablet of that strength).
    merged: list[_Dose] = []
    for dose in found:
        if merged and merged[-1].unit in ("tablet", "capsule") and dose.unit in _MASS_UNITS:
            between = folded[merged[-1].end : dose.start]
            if _STRENGTH.match(between) or re.fullmatch(r"\s*(?:de|of|del)\s*", between):
                tablets = merged[-1]
                merged[-1] = _Dose(tablets.value * dose.value, dose.unit, tablets.start, dose.end, tablets.value)
                continue
        merged.append(dose)
    return merged


def _choose_dose(doses: list[_Dose], folded: str) -> tuple[_Dose | None, float | None]:
    """The dose of a medication and a total said beside a per-kg dose, if any."""
    if not doses:
        return None, None
    amounts = [d for d in doses if d.unit.split("/")[0] in _MASS_UNITS] or doses
    chosen = amounts[0]
    # A correction between two amounts keeps the later one.
    for later in amounts[1:]:
        if _CORRECTION.search(folded[chosen.end : later.start]):
            chosen = later
    total = None
    if chosen.unit.endswith("/kg"):
        base = chosen.unit.split("/")[0]
        totals = [d for d in amounts if d.unit == base and d is not chosen]
        if totals:
            total = totals[0].value
    return chosen, total


def _interval(span_text: str, span_folded: str, language: str) -> tuple[float | None, str | None]:
    """Hours between doses and the words that said it."""
    for match in _INTERVAL.finditer(span_folded):
        count = _count(span_text[match.start("n") : match.end("n")], language)
        unit = match.group("unit")
        factor = _TIME_FACTORS.get(unit, _TIME_FACTORS.get(unit.rstrip("s"), None))
        if count and factor:
            return count * factor * 24, span_text[match.start() : match.end()]
    for match in _TIMES_PER_DAY.finditer(span_folded):
        if match.group("n2"):
            count = _WORD_COUNT.get(" ".join(match.group("n2").split()))
        else:
            count = _count(span_text[match.start("n") : match.end("n")], language)
        if count:
            return 24 / count, span_text[match.start() : match.end()]
    for pattern, hours in ((_MONTHLY, 720.0), (_WEEKLY, 168.0), (_DAILY, 24.0)):
        match = pattern.search(span_folded)
        if match:
            return hours, span_text[match.start() : match.end()]
    return None, None


def _duration(span_text: str, span_folded: str, language: str) -> float | None:
    for match in _DURATION.finditer(span_folded):
        before = span_folded[max(0, match.start() - 8) : match.start()]
        if re.search(r"(?:cada|every|de)\s*$", before):
            continue
        count = _count(span_text[match.start("n") : match.end("n")], language)
        factor = _TIME_FACTORS.get(match.group("unit"))
        if count and factor:
            return round(count * factor, 4)
    return None


def _routes(span_folded: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for code, pattern in _ROUTES:
        match = pattern.search(span_folded)
        if match:
            found.append((match.start(), code))
    return sorted(found)


def extract_medications(
    utterances: Sequence[Utterance], language: str, times: Sequence[SegmentTimes]
) -> list[Medication]:
    """Medicines given or prescribed: a drug (or product) name said by the clinician, outside
    the history, with at least a dose, a route, a frequency or a duration after it.

    The attributes between one drug name and the next belong to the first ("omeprazol, um
    miligrama por quilo, pela boca, uma vez por dia, durante sete dias"); a name said again later
    only fills what is still missing. Drugs the patient already took (history), drugs refused or
    stopped ("a prednisolona não precisa mais") and names said without any attribute ("normally
    I'd give amoxicillin") are not medications of this visit.
    """
    medications: list[Medication] = []
    by_key: dict[str, int] = {}
    for utterance in utterances:
        if utterance.question or utterance.by_patient or utterance.readback:
            continue
        if utterance.phase == "history" and utterance.section not in ("prescriptions", "plan"):
            continue
        text = utterance.text
        folded = fold_aligned(text)
        listed = _find_drugs(folded)
        mentions = _group_mentions(folded, sorted(listed + _unlisted_drugs(folded, language, text, listed), key=lambda m: m.start))
        if not mentions:
            continue
        doses = _doses(text, folded, language, 0, len(text))
        for k, mention in enumerate(mentions):
            span_start = 0 if k == 0 else mention.start
            span_end = mentions[k + 1].start if k + 1 < len(mentions) else len(text)
            span_text, span_folded = text[span_start:span_end], folded[span_start:span_end]
            key = mention.name
            own_doses = [d for d in doses if span_start <= d.start < span_end]
            dose, total_dose = _choose_dose(own_doses, folded)
            interval, frequency = _interval(span_text, span_folded, language)
            duration = _duration(span_text, span_folded, language)
            routes = _routes(span_folded)
            said_attribute = bool(dose or interval or duration or routes)
            if mention.route_hint and mention.route_hint not in {r for _, r in routes}:
                routes.insert(0, (-1, mention.route_hint))
            as_needed = bool(_AS_NEEDED.search(span_folded))
            continuous = bool(dose and dose.unit.endswith("/h")) or bool(_CONTINUOUS.search(span_folded))
            if key in by_key:
                index = by_key[key]
                existing = medications[index]
                if _REPEAT.search(span_folded) and _CONDITION.search(folded) and not existing.as_needed:
                    segments, _, _ = _cite(utterance, 0, len(text), times)
                    merged_segments = tuple(sorted(set(existing.source_segments) | set(segments)))
                    medications[index] = replace(
                        existing,
                        as_needed=True,
                        frequency=existing.frequency or text.strip().rstrip("."),
                        source_segments=merged_segments,
                        start_ms=min(times[i].start_ms for i in merged_segments),
                        end_ms=max(times[i].end_ms for i in merged_segments),
                    )
                    continue
                updates: dict[str, object] = {}
                if existing.interval_hours is None and interval is not None:
                    updates.update(interval_hours=interval, frequency=frequency)
                if existing.duration_days is None and duration is not None and not _ONGOING.search(span_folded):
                    updates["duration_days"] = duration
                if existing.route is None and routes:
                    updates["route"] = "+".join(dict.fromkeys(r for _, r in routes))
                if updates:
                    segments, _, _ = _cite(utterance, span_start, span_end, times)
                    merged_segments = tuple(sorted(set(existing.source_segments) | set(segments)))
                    updates.update(
                        source_segments=merged_segments,
                        start_ms=min(times[i].start_ms for i in merged_segments),
                        end_ms=max(times[i].end_ms for i in merged_segments),
                    )
                    medications[index] = replace(existing, **updates)  # type: ignore[arg-type]
                continue
            if not said_attribute:
                continue
            previous_end = mentions[k - 1].end if k else 0
            if _NEGATED_PRESCRIPTION.search(folded[max(previous_end, mention.start - 30) : mention.start]):
                continue
            route_codes = [r for _, r in routes]
            if not route_codes and (
                any(d.unit in ("tablet", "capsule") or d.count_of for d in own_doses)
                or _ORAL_HINTS.search(span_folded)
            ):
                route_codes = ["oral"]
            if _ONGOING.search(span_folded):
                duration = None
            entry = drug_by_name(mention.name)
            name = _display_name(text, folded, mention)
            segments, start_ms, end_ms = _cite(utterance, span_start, span_end, times)
            medications.append(
                Medication(
                    name=name,
                    dose=None if dose is None else dose.value,
                    unit=None if dose is None else dose.unit,
                    route="+".join(dict.fromkeys(route_codes)) or None,
                    frequency=frequency,
                    duration_days=duration,
                    source_segments=segments,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    interval_hours=interval,
                    as_needed=as_needed,
                    continuous=continuous,
                    drug=None if entry is None else entry.key,
                    total_dose=total_dose,
                    text=span_text.strip(" ,.;:"),
                )
            )
            by_key[key] = len(medications) - 1
    return medications


# ---------------------------------------------------------------------------------------------
# Diagnoses
# ---------------------------------------------------------------------------------------------

_DISEASE_WORDS = frozenset({
    # pt
    "doenca", "sindrome", "intoxicacao", "envenenamento", "infeccao", "insuficiencia", "estase",
    "fratura", "ruptura", "rotura", "luxacao", "torcao", "obstrucao", "hernia", "tumor",
    "neoplasia", "cancer", "diabetes", "alergia", "dermatite", "ulcera", "abscesso", "calculo",
    "calculos", "pneumonia", "parvovirose", "cinomose", "sarna", "hipertensao", "virose",
    "verminose", "displasia", "lipoma", "gripe", "resfriado", "anemia", "lesao", "distensao",
    "entorse", "epilepsia", "cardiomiopatia", "cardiopatia", "catarata", "glaucoma", "giardia",
    "giardiase", "erliquiose", "babesiose", "leishmaniose", "micose", "dermatofitose",
    "hipotireoidismo", "hipertireoidismo", "otite", "cistite", "gastrite", "enterite",
    "gastroenterite", "pancreatite", "conjuntivite", "gengivite", "artrose", "artrite",
    # en
    "disease", "syndrome", "poisoning", "toxicity", "infection", "failure", "stasis",
    "fracture", "rupture", "tear", "dislocation", "torsion", "obstruction", "tumour",
    "allergy", "ulcer", "abscess", "stones", "hypertension", "strain", "sprain", "dysplasia",
    "flu", "cold", "anaemia", "lesion", "strep", "hypercholesterolemia", "hyperlipidemia",
    "cataract", "asthma", "migraine", "gout", "hypothyroidism", "hyperthyroidism",
    "cardiomyopathy", "epilepsy", "cystitis", "dermatitis", "otitis", "conjunctivitis",
    # es
    "enfermedad", "intoxicacion", "envenenamiento", "infeccion", "fractura", "luxacion",
    "obstruccion", "alergia", "absceso", "neumonia", "hipertension", "esguince", "displasia",
    "gripe", "resfriado", "lesion", "moquillo", "parvovirus", "sarna", "catarata",
    "herpesvirus", "rompio", "rompido", "roto", "rompeu", "rasgou", "torn",
})
_DISEASE_SUFFIXES = ("ite", "itis", "ose", "osis", "iase", "iasis", "emia", "aemia", "patia", "pathy",
                     "oma", "ismo", "ism", "plasia")
_NOT_DISEASES = frozenset({
    "apetite", "noite", "leite", "evite", "limite", "convite", "palpite", "parasite", "site",
    "favorite", "opposite", "despite", "white", "write", "quite", "bite", "kite", "elite",
    "requisite", "definite", "infinite", "granite", "satellite", "dose", "glicose", "glucose",
    "close", "those", "chose", "rose", "nose", "hose", "lose", "pose", "suppose", "purpose",
    "diagnose", "diagnosis", "prognosis", "verbose", "morbose", "sintoma", "sintomas",
    "symptom", "idioma", "aroma", "diploma", "coma", "soma", "genoma", "academia", "mecanismo",
    "organismo", "mismo", "turismo", "abismo", "prism", "mechanism", "organism", "enthusiasm",
    "mucose", "mucosa", "gordura", "glucosa", "dermis", "media", "remite", "admite", "permite",
    "transmite", "emite", "compite", "acredite", "visite", "insiste", "existe", "resiste",
    "desiste", "consiste", "assiste", "acomete", "repite", "compromise", "exercise", "promise",
    "otherwise", "likewise", "advise", "endose", "arose", "dispose", "expose", "oppose",
    "propose", "compose", "impose", "ose", "lactose", "frutose", "sacarose", "celulose",
    "glicemia", "glicemias", "hemograma", "ecograma", "radiograma",
})
_NP_STOP = frozenset({
    # verbs, conjunctions, relatives and adverbs that end a noun phrase
    "e", "and", "y", "que", "which", "that", "who", "com", "with", "con", "mas", "but", "pero",
    "ou", "or", "o", "u", "e", "is", "es", "esta", "ta", "foi", "was", "pode", "can", "vai",
    "will", "porque", "because", "so", "entao", "then", "se", "if", "si", "como", "as", "para",
    "pra", "pro", "to", "tem", "has", "have", "tiene", "muito", "very", "muy", "ja", "already",
    "ya", "isso", "this", "esto", "eso", "it", "ele", "ela", "el", "ella", "ficou", "fica",
    "tava", "estava", "esta", "sao", "are", "son", "mais", "more", "mas", "nao", "no", "not",
    "agora", "now", "ahora", "hoje", "today", "hoy", "ai", "pelo", "pela", "by", "eu", "i",
    "we", "you", "a", "an", "the", "um", "uma", "un", "una", "in", "on", "at", "na", "no",
    "en", "num", "numa", "provavelmente", "probably", "probablemente", "tambem", "also",
    "tambien", "for", "essa", "esse", "este", "these", "those", "geralmente", "usually",
    "generalmente", "really", "most", "mostly", "quase", "almost", "casi", "causa",
    "continua", "persiste", "passou", "melhorou", "piorou", "sigue", "continues", "persists",
    "remains", "improved", "controlada", "controlado", "controlled", "curada", "curado",
})
_GENERIC_HEADS = frozenset({"doenca", "disease", "enfermedad", "problema", "problem", "condition", "lesao", "lesion", "alergia", "allergy"})
_GENERIC_QUALIFIERS = frozenset({
    "seria", "serio", "grave", "comum", "common", "serious", "rara", "raro", "rare", "simples",
    "simple", "leve", "mild", "importante", "complicada", "dificil", "tratavel", "treatable",
    "cronica", "chronic", "cronico", "nova", "new", "nueva", "outra", "other", "otra",
})
_NP_LINKS = frozenset({"de", "da", "do", "das", "dos", "del", "por", "of", "the", "a", "ao", "la", "el", "em"})
_LEFT_STOP = frozenset({
    "a", "an", "the", "this", "that", "is", "of", "with", "for", "and", "or", "likely",
    "probably", "think", "looks", "like", "it", "be", "to", "has", "have", "your", "my", "his",
    "her", "its", "some", "any", "no", "not", "from", "in", "on", "so", "which", "very", "quite",
    "consistent", "suggestive", "i", "we", "you", "he", "she", "they", "possible", "suspected",
    "picture", "classic", "with", "as", "are", "was", "s", "it's", "there", "there's", "also",
})
_SUSPECTED = re.compile(_rx(
    "suspeita", "suspeito", "suspeitar", "suspeitamos", "sospecha", "sospecho", "sospechamos",
    "penso", "pensar", "pienso", "parece", "parecer", "provavel", "provavelmente", "probable",
    "probablemente", "likely", "probably", "i think", "looks like", "it looks", "suggest\\w*",
    "sugestiv\\w*", "sugiere", "compativel", "compatible", "consistent with", "could be",
    "might be", "may be", "pode ser", "puede ser", "possivel", "posible", "possible",
    "talvez", "maybe", "perhaps", "quizas", "differential", "diferencial", "acho que",
    "creo que", "impressao", "impression", "rule out", "descartar",
))
_CONFIRMED = re.compile(_rx(
    "confirm\\w*", "fica confirmado", "confirmou", "confirmado", "confirmada", "positive",
    "positivo", "positiva", "diagnosis is", "o diagnostico e", "el diagnostico es",
))
_NEGATION = re.compile(_rx(
    "sem", "nao", "no", "not", "without", "sin", "nenhum", "nenhuma", "ningun", "ninguna",
    "descartar", "descartado", "descartada", "rule out", "ruled out", "exclude", "excluir",
    "no sign", "no signs", "sem sinal", "nem", "nor", "ni",
))
_HYPOTHETICAL = re.compile(_rx(
    "pode virar", "pode dar", "can become", "could turn", "puede volverse", "risco de",
    "risk of", "riesgo de", "evitar", "prevent", "prevenir", "previne", "se nao tratar",
    "if untreated", "ajuda a dar", "tendencia", "tendency", "propenso", "prone",
))


def _is_disease(word: str) -> bool:
    if word in _NOT_DISEASES:
        return False
    if word in _DISEASE_WORDS:
        return True
    return len(word) >= 6 and word.endswith(_DISEASE_SUFFIXES)


def _noun_phrase(tokens: list[re.Match[str]], head: int, folded: str, language: str) -> tuple[int, int]:
    """Token range of the diagnosis around a disease word: left modifiers in English, then the
    head and its complements ("otite externa por malassézia", "muscular strain of the lower
    back"), stopping at a clause break, a verb or a conjunction."""
    start = head
    if language == "en" or language not in ("pt", "es"):
        while start > 0 and head - start < 3:
            prev = tokens[start - 1]
            between = folded[prev.end() : tokens[start].start()]
            if prev.group() in _LEFT_STOP or _CLAUSE.search(between) or any(c in between for c in ".!?"):
                break
            start -= 1
    end = head + 1
    while end < len(tokens) and end - start < 8:
        between = folded[tokens[end - 1].end() : tokens[end].start()]
        if _CLAUSE.search(between) or any(c in between for c in ".!?"):
            break
        word = tokens[end].group()
        if word in _NP_LINKS:
            if end + 1 < len(tokens) and tokens[end + 1].group() not in _NP_STOP | _NP_LINKS or (
                end + 2 < len(tokens)
                and tokens[end + 1].group() in _NP_LINKS
                and tokens[end + 2].group() not in _NP_STOP | _NP_LINKS
            ):
                end += 1
                continue
            break
        if word in _NP_STOP or word.isdigit():
            break
        end += 1
    # Do not end on a link word.
    while end - 1 > head and tokens[end - 1].group() in _NP_LINKS:
        end -= 1
    return start, end


def _diagnosis_key(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", fold_aligned(text)) if w not in _NP_LINKS}


def extract_diagnoses(
    utterances: Sequence[Utterance], language: str, times: Sequence[SegmentTimes]
) -> list[Diagnosis]:
    """Diagnoses the clinician gave in the assessment, as worded, stated or suspected.

    A diagnosis is a noun phrase around a disease word (a listed term such as "insuficiência",
    "intoxicação", "strain", or a disease ending: -ite/-itis, -ose/-osis, -oma, -patia/-pathy...)
    in a sentence placed in the assessment. It is suspected when hedged before it ("suspeita de",
    "penso em", "parece", "probablemente", "likely"), stated otherwise; a later confirmation or a
    plain restatement makes it stated. Negated ("sem obstrução", "no sign of") and hypothetical
    ("pode virar obstrução") mentions are not diagnoses.
    """
    found: list[tuple[str, str, list[tuple[Utterance, int, int]]]] = []
    for utterance in utterances:
        if utterance.question or utterance.by_patient or utterance.section != "assessment":
            continue
        text = utterance.text
        folded = fold_aligned(text)
        tokens = list(re.finditer(r"[a-z0-9]+", folded))
        covered_until = -1
        for k, token in enumerate(tokens):
            if k < covered_until or not _is_disease(token.group()):
                continue
            start, end = _noun_phrase(tokens, k, folded, language)
            covered_until = end
            clause_start = max((m.end() for m in _CLAUSE.finditer(folded, 0, token.start())), default=0)
            sentence_start = max((m.end() for m in re.finditer(r"[.!?]\s", folded[: token.start()])), default=0)
            before = folded[max(clause_start, token.start() - 40) : token.start()]
            lead = folded[sentence_start : token.start()]
            if _NEGATION.search(before) or _HYPOTHETICAL.search(lead):
                continue
            char_start, char_end = tokens[start].start(), tokens[end - 1].end()
            phrase = text[char_start:char_end].strip()
            if len(phrase) < 3:
                continue
            words = [t.group() for t in tokens[start:end]]
            if token.group() in _GENERIC_HEADS and set(words) - {token.group()} <= _GENERIC_QUALIFIERS:
                continue  # "uma doença séria", "a alergia": no diagnosis named
            status = "suspected" if _SUSPECTED.search(lead) and not _CONFIRMED.search(lead) else "stated"
            found.append((phrase, status, [(utterance, char_start, char_end)]))
    merged: list[tuple[str, str, list[tuple[Utterance, int, int]]]] = []
    for phrase, status, spans in found:
        key = _diagnosis_key(phrase)
        for m, (other, other_status, other_spans) in enumerate(merged):
            other_key = _diagnosis_key(other)
            first_word = lambda s: (re.findall(r"[a-z]{4,}", fold_aligned(s)) or [""])[0]  # noqa: E731
            if key and other_key and first_word(phrase) == first_word(other) and (
                len(key & other_key) >= min(2, len(key), len(other_key))
            ):
                new_status = "stated" if "stated" in (status, other_status) else "suspected"
                merged[m] = (other, new_status, other_spans + spans)
                break
        else:
            merged.append((phrase, status, spans))
    result: list[Diagnosis] = []
    for phrase, status, spans in merged:
        segments, start_ms, end_ms = _cite_many(spans, times)
        result.append(Diagnosis(text=phrase, status=status, source_segments=segments, start_ms=start_ms, end_ms=end_ms))
    return result


# ---------------------------------------------------------------------------------------------
# Follow-up
# ---------------------------------------------------------------------------------------------

_VISIT = re.compile(_rx(
    "retorno", "retornar", "retorne", "volta", "voltar", "volte", "voltem", "revisao",
    r"reavali\w*", "reavalio", "consulta", "quero ver", "te vejo", "vejo voces", "vejo ela",
    "vejo ele", "ver de novo", "ver a", "ver o", "agendamos", "agendar", "agendado", "marcar",
    "marcamos", "procedimento", "cirurgia", "a proxima", "o proximo", "proxima consulta",
    "come back", "follow up", "follow-up", "review", "appointment", "recheck", "see you",
    "see me", "see her", "see him", "book", "revision", "revisión", "vuelva", "volver",
    "vuelvan", "cita", "control", "nos vemos", "la proxima", "el proximo", "reevaluar",
    "reevaluamos", "procedure", "surgery", "cirugia",
))
_LOW_VISIT = re.compile(_rx(
    "te ligo", "ligo", "eu ligo", "i'll call", "we'll call", "call you", "le llamo", "te llamo",
    "resultado", "resultados", "results", "resultados salen", "sai em", "saem em",
))
_NO_RETURN = re.compile(_rx(
    "nao precisa marcar retorno", "nao precisa voltar", "nao precisa de retorno",
    "sem necessidade de retorno", "no need to come back", "no need for a follow up",
    "no need to return", "no hace falta volver", "no es necesario volver",
    "no hace falta revision", "nao precisa retornar",
))
_DOSE_CONTEXT = re.compile(_rx(
    "comprimido", "comprimidos", "dose", "doses", "tablet", "tablets", "pill", "pills",
    "pastilla", "pastillas", "pipeta", "pipette", "dosis", "aplicacao", "aplicacion",
    "injecao", "injection", "inyeccion",
))
_INTERVAL_PREP = re.compile(r"(?:daqui\s+a|dentro\s+de|em|in|en|within|after|apos|depois\s+de|pra\s+daqui\s+a|para\s+daqui\s+a|para|pra)\s+(?:uns\s+|umas\s+|about\s+|unos\s+|unas\s+|another\s+|mais\s+)?$")
_TIME_UNIT = re.compile(r"\s*(horas?|hours?|dias?|days?|semanas?|weeks?|mes(?:es)?|months?|anos?|years?)(?![\w])")
_RELATIVE_DAYS = (
    (re.compile(_rx("amanha", "tomorrow", "manana")), 1.0),
    (re.compile(_rx("semana que vem", "proxima semana", "next week", "la semana que viene", "la proxima semana")), 7.0),
    (re.compile(_rx("mes que vem", "proximo mes", "next month", "el mes que viene", "el proximo mes")), 30.0),
)


def extract_follow_up_days(
    utterances: Sequence[Utterance], language: str, times: Sequence[SegmentTimes]
) -> Fact | None:
    """Days until the next visit, as stated by the clinician ("retorno em sete dias", "if it's not
    improving in two weeks, come back", "a próxima é daqui a um ano").

    An interval counts when its clause names a visit (return, review, appointment, procedure);
    a promised call or results ("os resultados saem em dois dias") only when no visit is given;
    the timing of the next dose of a drug ("o próximo comprimido é daqui a vinte dias") never.
    "Não precisa marcar retorno" means no return. The clinician's last such statement wins.
    """
    visit: Fact | None = None
    fallback: Fact | None = None
    no_return = False
    for utterance in utterances:
        if utterance.question or utterance.by_patient:
            continue
        text = utterance.text
        folded = fold_aligned(text)
        if _NO_RETURN.search(folded):
            no_return = True
            continue
        for number in find_numbers(text, language):
            unit = _TIME_UNIT.match(folded, number.end)
            if not unit or not _INTERVAL_PREP.search(folded[max(0, number.start - 25) : number.start]):
                continue
            factor = _TIME_FACTORS.get(unit.group(1))
            if factor is None:
                continue
            clause_start = max((m.end() for m in re.finditer(r"[.;!?]|,\s*(?:e|and|y)\s", folded[: number.start])), default=0)
            clause_end_match = re.compile(r"[.;!?]").search(folded, unit.end())
            clause_end = clause_end_match.start() if clause_end_match else len(folded)
            clause = folded[clause_start:clause_end]
            comma_start = max((m.end() for m in _CLAUSE.finditer(folded, 0, number.start)), default=0)
            comma_end_match = _CLAUSE.search(folded, unit.end())
            comma_clause = folded[comma_start : comma_end_match.start() if comma_end_match else clause_end]
            if _DOSE_CONTEXT.search(comma_clause):
                continue
            days = round(number.value * factor, 4)
            fact = _fact(days, "days", utterance, number.start, unit.end(), times)
            if _VISIT.search(clause):
                visit = fact
            elif _LOW_VISIT.search(clause) and utterance.section in ("follow_up", "plan", None):
                fallback = fact
            elif utterance.section == "follow_up":
                fallback = fallback or fact
        if visit is None:
            for pattern, days in _RELATIVE_DAYS:
                match = pattern.search(folded)
                if match and (_VISIT.search(folded) or _LOW_VISIT.search(folded)) and utterance.section == "follow_up":
                    fallback = _fact(days, "days", utterance, match.start(), match.end(), times)
    if visit is not None:
        return visit
    if no_return:
        return None
    return fallback


# ---------------------------------------------------------------------------------------------
# Patient
# ---------------------------------------------------------------------------------------------

_SPECIES_WORDS: dict[str, tuple[str, ...]] = {
    "dog": ("cachorro", "cachorra", "cao", "cadela", "cadelinha", "cachorrinho", "cachorrinha",
            "dog", "puppy", "perro", "perra", "perrito", "perrita", "canino", "canina", "canine"),
    "cat": ("gato", "gata", "gatinho", "gatinha", "felino", "felina", "feline", "cat", "kitten",
            "gatito", "gatita"),
    "rabbit": ("coelho", "coelha", "coelhinho", "rabbit", "bunny", "conejo", "coneja"),
    "bird": ("calopsita", "periquito", "papagaio", "parrot", "budgie", "cockatiel", "loro"),
    "guinea pig": ("porquinho da india", "guinea pig", "cobaya", "cobayo"),
    "horse": ("cavalo", "egua", "horse", "mare", "caballo", "yegua"),
}
_FEMALE_NOUNS = frozenset({"cachorra", "cadela", "cadelinha", "cachorrinha", "gata", "gatinha", "coelha", "perra", "perrita", "gatita", "coneja", "egua", "yegua", "mare", "bitch", "queen"})
_SPECIES_ADJECTIVES = frozenset({"felino", "felina", "feline", "canino", "canina", "canine"})
_OTHER_ANIMAL = re.compile(_rx("outro", "outra", "other", "another", "otro", "otra", "do", "da", "of the", "del", "de la", "de", "um", "uma", "a", "an", "un", "una", "dois", "two", "dos", "duas", "meu", "minha", "my", "mi", "seu", "sua", "your", "vizinho", "neighbour", "neighbor"))
_GENERIC_CONTEXT = re.compile(r"(?:^|\s)(?:em|en|in|para|pra|for|como|like|num|numa)\s+(?:um\s+|uma\s+|un\s+|una\s+|a\s+)?$|(?:^|\s)(?:e|is|es)\s+(?:um|uma|a|an|un|una)\s+$")
_BREEDS = (
    "labrador retriever", "labrador", "golden retriever", "golden", "poodle", "shih tzu",
    "shih-tzu", "yorkshire", "yorkshire terrier", "pastor alemao", "german shepherd",
    "pastor aleman", "bulldog frances", "bulldog ingles", "french bulldog", "bulldog", "pug",
    "beagle", "dachshund", "salsicha", "teckel", "border collie", "rottweiler", "pinscher",
    "chihuahua", "maltes", "maltese", "lhasa apso", "spitz alemao", "spitz", "pomeranian",
    "husky siberiano", "siberian husky", "husky", "boxer", "schnauzer", "cocker spaniel",
    "cocker", "pit bull", "pitbull", "dalmata", "dalmatian", "doberman", "akita", "chow chow",
    "persa", "persian", "siames", "siamese", "maine coon", "ragdoll", "sphynx", "bengal",
    "angora", "mini lop", "holland lop", "lionhead", "rex", "vira-lata", "vira lata",
    "sem raca definida", "srd", "mestico", "mestica", "mestizo", "mestiza", "mixed breed",
    "sin raza", "europeu comum", "europeo comun",
)
_BREED_RX = re.compile(_rx(*(re.escape(b).replace(r"\ ", r"\s+") for b in _BREEDS)))
_SEX_EXPLICIT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_rx("macho", "male", "castrado", "castrated", "neutered male", "esterilizado", "entero")), "male"),
    (re.compile(_rx("femea", "female", "hembra", "castrada", "spayed", "esterilizada", "cio", "heat", "celo", "prenhe", "gravida", "prenada", "pregnant")), "female"),
)
_AGE = re.compile(
    r"(?:(?<![\w])(?:tem|tiene|has|is|esta com|completou|cumplio|cumple|fez|turned)\s+(?:ja\s+|already\s+|solo\s+|so\s+|only\s+)?)"
    r"(?P<n>[\w -]+?)\s+(?P<unit>anos?|anitos|meses|mes|semanas|years?|months?|weeks?|anos de idade)(?![\w])"
    r"|(?P<n2>[\w.,-]+(?:\s+[\w.,-]+){0,3}?)[\s-]+(?P<unit2>years?|months?|weeks?)[\s-]+old(?![\w])"
    r"|(?P<n3>[\w.,-]+(?:\s+[\w.,-]+){0,3}?)\s+(?P<unit3>anos|meses|anos|semanas|años)\s+de\s+(?:idade|edad)(?![\w])"
)
_AGE_QUESTION = re.compile(_rx("quantos anos", "que idade", "qual a idade", "how old", "cuantos anos", "que edad", "cual es la edad"))
_BARE_AGE_ANSWER = re.compile(r"^\s*(?:(?:ele|ela|she|he|it|tiene|tem)\s+)?(?P<n>[\w\s-]+?)\s*[.!,]")
_AGE_UNITS = {"ano": "years", "anos": "years", "anitos": "years", "year": "years", "years": "years",
              "mes": "months", "meses": "months", "month": "months", "months": "months",
              "semana": "weeks", "semanas": "weeks", "week": "weeks", "weeks": "weeks",
              "anos de idade": "years"}
_NAME_BEFORE = re.compile(r"(?:(?:esse|essa|este|esta|this)\s+(?:e|es|is)\s+(?:o|a|el|la)?\s*|^(?:oi|ola|hola|hi|hello|hey)[,\s]+)$")
_NOT_NAMES = frozenset({
    "deus", "god", "dios", "doutor", "doutora", "doctor", "doctora", "senhor", "senhora",
    "dona", "seu", "mr", "mrs", "ms", "dr", "dra", "bom", "boa", "good", "buenos", "buenas",
    "tudo", "que", "what", "okay", "ok", "entao", "so", "um", "uh", "well", "come",
})
_PERSON_TITLES = re.compile(_rx("dona", "seu", "senhor", "senhora", "sr", "sra", "mr", "mrs", "ms", "miss", "don", "dr", "dra", "doutor", "doutora", "doctor", "doctora"))


def _species(utterances: Sequence[Utterance], times: Sequence[SegmentTimes], domain: str) -> tuple[Fact | None, Fact | None]:
    """Species (and a female noun as the sex), from how the clinician speaks of the patient.

    Only generic or predicative uses count ("em coelho isso é urgente", "em gato macho", "é um
    gato", "herpesvirus felino"); "o gato da minha irmã", "outro gato", "um gato" (another animal
    in a story) do not.
    """
    if domain == "human":
        return None, None
    votes: dict[str, list[tuple[Utterance, int, int, str]]] = {}
    for utterance in utterances:
        if utterance.question:
            continue
        folded = fold_aligned(utterance.text)
        for species, words in _SPECIES_WORDS.items():
            for match in re.finditer(_rx(*words, *(w + "s" for w in words if not w.endswith("s"))), folded):
                word = match.group()
                if word.endswith("s") and word[:-1] in words:
                    word = word[:-1]
                before = folded[max(0, match.start() - 14) : match.start()]
                adjective = word in _SPECIES_ADJECTIVES
                generic = bool(_GENERIC_CONTEXT.search(before))
                if not adjective and not generic:
                    continue
                if not adjective and re.search(_rx("outro", "outra", "other", "another", "otro", "otra", "dois", "duas", "two", "dos"), before):
                    continue
                after = folded[match.end() : match.end() + 16]
                if not adjective and re.match(r"\s+(?:da|do|de|of|del)\s", after):
                    continue
                if utterance.by_patient and not re.search(r"(?:e|is|es)\s+(?:um|uma|a|an|un|una)\s+$", before):
                    continue
                votes.setdefault(species, []).append((utterance, match.start(), match.end(), word))
    if not votes:
        return None, None
    ranked = sorted(votes.items(), key=lambda kv: -len(kv[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        return None, None
    species, mentions = ranked[0]
    utterance, start, end, _ = mentions[0]
    species_fact = _fact(species, None, utterance, start, end, times)
    female = [m for m in mentions if m[3] in _FEMALE_NOUNS]
    sex_fact = _fact("female", None, female[0][0], female[0][1], female[0][2], times) if female else None
    return species_fact, sex_fact


_INTRODUCTION = re.compile(
    r"(?:(?:esse|essa|este|esta|this)\s+(?:e|es|is)\s+(?:o|a|el|la)?\s*"
    r"|(?:^|[.!?¿¡,]\s*)(?:oi|ola|hola|hi|hello|hey|olha so|olha|mira|look at)[,\s]+(?:o\s+|a\s+|el\s+|la\s+)?)$"
)
_ARTICLE_BEFORE = re.compile(r"(?:^|\s)(?:o|a|el|la)\s+$")


def _name(utterances: Sequence[Utterance], domain: str, times: Sequence[SegmentTimes]) -> Fact | None:
    """The patient's name as the clinician introduces or greets them ("Esse é o Thor?", "Oi,
    Mingau", "¿Esta es Luna?", "Hi Priya", "Olha só a Amora"), or, in veterinary visits, a
    capitalised word after an article ("a Nina veio fazer um check-up"). Names after "dona",
    "Mr" and the like are the people who came with the patient. The most frequent wins."""
    votes: dict[str, list[tuple[float, Utterance, int, int]]] = {}
    for utterance in utterances:
        text = utterance.text
        folded = fold_aligned(text)
        for match in re.finditer(r"(?<![\w])([A-ZÀ-Ý][a-zà-ÿ]+)(?![\w])", text):
            word = match.group(1)
            if fold_aligned(word) in _NOT_NAMES:
                continue
            before = folded[max(0, match.start() - 25) : match.start()]
            if _PERSON_TITLES.search(before[-9:]):
                continue
            if _INTRODUCTION.search(folded[: match.start()][-30:]) and not utterance.by_patient:
                weight = 2.0
            elif domain != "human" and _ARTICLE_BEFORE.search(before) and match.start() > 0:
                weight = 1.0
            elif domain != "human" and match.start() >= 2 and re.search(r"(?:^|\s)(?:o|a)\s+$", before) is None and re.fullmatch(r"\s*(?:a|o)\s*", before[-3:] or ""):
                weight = 1.0
            else:
                continue
            votes.setdefault(word, []).append((weight, utterance, match.start(), match.end()))
    if not votes:
        return None
    word, spans = max(votes.items(), key=lambda kv: (sum(w for w, *_ in kv[1]), -kv[1][0][1].index))
    if sum(w for w, *_ in spans) < 2:
        return None
    _, utterance, start, end = spans[0]
    return _fact(word, None, utterance, start, end, times)


def _age(utterances: Sequence[Utterance], language: str, times: Sequence[SegmentTimes]) -> Fact | None:
    """Age as said, the last correction winning ("Ele tem três anos. Não, espera, dois.")."""
    best: Fact | None = None
    asked_at = -10
    for utterance in utterances:
        folded = fold_aligned(utterance.text)
        if utterance.question:
            if _AGE_QUESTION.search(folded):
                asked_at = utterance.index
            continue
        recent_question = utterance.index - asked_at <= 3
        for match in _AGE.finditer(folded):
            group = next(g for g in ("n", "n2", "n3") if match.group(g))
            unit_group = {"n": "unit", "n2": "unit2", "n3": "unit3"}[group]
            number_text = utterance.text[match.start(group) : match.end(group)]
            value = _count(number_text, language)
            if value is None or not 0 < value < 130:
                continue
            unit = _AGE_UNITS.get(match.group(unit_group).split()[0], "years")
            start = match.start(group)
            best = _fact(value, unit, utterance, start, match.end(), times)
        if recent_question and best is None or recent_question and _CORRECTION.search(folded):
            # A bare answer ("Doze.") or its correction ("Não, espera, não, dez.").
            for number in find_numbers(utterance.text, language):
                head = folded[: number.start]
                if head.strip(" ,.!") and not _CORRECTION.search(head) and not re.fullmatch(r"\s*(?:ele|ela|he|she|tiene|tem)?\s*", head):
                    continue
                if not 0 < number.value < 130:
                    continue
                if re.match(r"\s*(?:vez|vezes|times|dias?|days?|horas?|hours?|quilos?|kg|kilos?)", folded[number.end :]):
                    continue
                unit = best.unit if best is not None else "years"
                best = _fact(number.value, unit, utterance, number.start, number.end, times)
                break
        if recent_question:
            for match in re.finditer(r"(?<![\w])(?:tem|tiene|has|is)\s+(?P<n>[a-z0-9 -]+?)\s*[.!]", folded):
                numbers = find_numbers(utterance.text[match.start("n") : match.end("n")], language)
                if numbers and 0 < numbers[-1].value < 130 and numbers[-1].end == match.end("n") - match.start("n"):
                    start = match.start("n") + numbers[-1].start
                    best = _fact(numbers[-1].value, best.unit if best else "years", utterance, start, match.end("n"), times)
    return best


def _sex(
    utterances: Sequence[Utterance], times: Sequence[SegmentTimes], name: Fact | None, domain: str
) -> Fact | None:
    """Sex when said ("macho", "castrada", "fêmea", "entire male") or shown by the article or
    demonstrative before the patient's name ("Esse é o Thor", "a Bela", "¿Esta es Luna?")."""
    if domain == "human":
        return None
    for utterance in utterances:
        if utterance.question:
            continue
        folded = fold_aligned(utterance.text)
        for pattern, sex in _SEX_EXPLICIT:
            match = pattern.search(folded)
            if match:
                return _fact(sex, None, utterance, match.start(), match.end(), times)
    if name is None:
        return None
    votes: dict[str, list[tuple[Utterance, int, int]]] = {}
    pattern = re.compile(r"(?<![\w])" + re.escape(str(name.value)) + r"(?![\w])")
    for utterance in utterances:
        folded = fold_aligned(utterance.text)
        for match in pattern.finditer(utterance.text):
            before = folded[max(0, match.start() - 12) : match.start()]
            if re.search(r"(?:(?:esse|este)\s+(?:e|es)\s+(?:o\s+)?|(?:^|\s)(?:o|el)\s+)$", before):
                sex = "male"
            elif re.search(r"(?:(?:essa|esta)\s+(?:e|es)\s+(?:a\s+)?|(?:^|\s)(?:a|la)\s+)$", before):
                sex = "female"
            else:
                continue
            article = re.search(r"\w+(?:\s+\w+)*\s+$", before)
            start = match.start() - (len(before) - article.start()) if article else match.start()
            votes.setdefault(sex, []).append((utterance, start, match.end()))
    if len(votes) != 1:
        return None
    sex, spans = next(iter(votes.items()))
    utterance, start, end = spans[0]
    return _fact(sex, None, utterance, start, end, times)


def extract_patient(
    utterances: Sequence[Utterance], language: str, domain: str, times: Sequence[SegmentTimes]
) -> Patient:
    """Name, species, breed, sex and age, each only when the consultation says it."""
    name = _name(utterances, domain, times)
    species, female_noun = _species(utterances, times, domain)
    breed: Fact | None = None
    for utterance in utterances:
        if utterance.question:
            continue
        match = _BREED_RX.search(fold_aligned(utterance.text))
        if match and domain != "human":
            breed = _fact(utterance.text[match.start() : match.end()], None, utterance, match.start(), match.end(), times)
            break
    sex = _sex(utterances, times, name, domain) or female_noun
    age = _age(utterances, language, times)
    return Patient(name=name, species=species, breed=breed, sex=sex, age=age)
