"""The default offline note generator: keyword and pattern rules over the transcript's sentences.

It runs on the CPU with only the standard library and no model. Every section is built from
sentences that were actually said, lightly cleaned (openers such as "Então," and trailing tags such
as ", né?" dropped, first letter capitalised, ending punctuation added). Two kinds of line are
written from what was said rather than copied, each citing the segments it comes from: clinical
terms for lay words by the general tables of ``terms.py`` ("tá babando muito" -> "Salivação
excessiva"), and the vital signs as read by the structured extraction ("Peso 30,5 kg; temperatura
39,4 °C"). A sentence that matches no section is left out rather than guessed at, and a section
with nothing in it is left out of the note.

How a sentence is placed:

1. Segments are split into sentences; a sentence the recogniser broke across segments of the same
   speaker is joined back and cites every segment it came from.
2. Each sentence is matched against per-language keyword tables (module-level constants below),
   giving counts per signal: complaint, visit reason, history, exam, vital sign, assessment, plan,
   drug, dose, route, frequency, instruction, urgency, follow-up and return interval.
3. Questions are not facts and are skipped, as are read-backs (a short sentence repeating words
   just said, like an owner repeating the dose). But an answer that only makes sense with its
   question ("E o apetite?" - "Come que é uma beleza.", "Desmaiou?" - "Não.") is written with it,
   as "O apetite: come que é uma beleza.", and scored on both; a "no" denies the symptoms the
   question names ("Sem síncope.").
4. The consultation is split into phases: history until the first vital sign or announced
   examination, then the examination, then the treatment talk from the first diagnosis or dosed
   drug. The same words mean different things in each ("dor" is a complaint when the owner says
   it before the examination, a finding when the clinician reports it during it).
5. The chief complaint is the first complaint-like statement(s) of the history phase, preferably
   the patient's or owner's, led by a stated reason for the visit if there is one, and completed
   by the symptoms the patient affirms when asked ("Have you had a fever?" - "Yeah..."). Every
   other sentence goes to its best-scoring section and, when it also carries facts of others (up
   to two more, each scoring at least one signal there), to those too: "vai ficar internada
   vinte e quatro horas" is an assessment and a plan. When speaker roles are known, the patient
   or owner only contributes to the complaint and the history.
6. In the treatment talk, a clinician's sentence that matches nothing but continues the talk
   around it in the same turn ("E um difusor de feromônio ajuda bastante") joins its neighbour's
   section.

The structured extraction (``extraction.py``) sees every sentence as said, with the one section it
belongs to most.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.notegen.domain.extraction import (
    SegmentTimes,
    fold_aligned,
    Utterance,
    extract_diagnoses,
    extract_follow_up_days,
    extract_medications,
    extract_patient,
    extract_vitals,
)
from services.notegen.domain.safety import check_medications
from services.notegen.domain.sections import (
    DOMAINS,
    FALLBACK_LANGUAGE,
    SECTION_LABELS,
    SUPPORTED_LANGUAGES,
    normalise_language,
    title_for,
)
from services.notegen.domain.terms import KINDS, find_terms, negated, vital_phrase
from services.notegen.domain.structured import (
    Diagnosis,
    Fact,
    Medication,
    Patient,
    SafetyFlag,
    Sentence,
    StructuredData,
    Vitals,
)

__all__ = [
    "DEFAULT_MIN_WORDS",
    "Diagnosis",
    "Fact",
    "GENERATOR_NAME",
    "GeneratedNote",
    "GeneratedSection",
    "Medication",
    "Patient",
    "SafetyFlag",
    "Sentence",
    "StructuredData",
    "TranscriptSegment",
    "TranscriptTooShort",
    "Vitals",
    "generate_note",
]

GENERATOR_NAME = "rules-v1"
"""Recorded on every note this module writes, so a note says which generator produced it."""

DEFAULT_MIN_WORDS = 12

# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptSegment:
    """One recognised stretch of speech, as the transcription stage delivers it.

    ``speaker`` is ``"doctor"``, ``"patient"`` (the owner in veterinary visits) or
    ``"unspecified"`` when there is no diarization.
    """

    text: str
    start_ms: int
    end_ms: int
    speaker: str = "unspecified"


@dataclass
class GeneratedSection:
    """One section of a note.

    ``content`` is the section's text: its ``sentences`` joined by a space. ``source_segments``
    are the indices into the input segments of everything the section says; each
    :class:`Sentence` carries its own segments and their time range.
    """

    label: str
    title: str
    content: str
    order: int
    source_segments: list[int]
    sentences: tuple[Sentence, ...] = ()


@dataclass
class GeneratedNote:
    """A generated note: its language, the non-empty sections in order, who wrote it, and the
    structured facts read from the same transcript (vitals, medications, diagnoses, follow-up,
    patient, and safety flags on doses)."""

    language: str
    sections: list[GeneratedSection]
    generator: str
    structured: StructuredData = field(default_factory=StructuredData)

    def section(self, label: str) -> GeneratedSection | None:
        """The section with ``label``, or ``None`` when the note has no such section."""
        return next((s for s in self.sections if s.label == label), None)


class TranscriptTooShort(Exception):
    """The transcript holds too little clinical content to write a note from.

    ``word_count`` is the number of words left after greetings and courtesies are removed;
    ``reason`` is ``"too_few_words"`` or ``"no_clinical_content"``.
    """

    def __init__(self, word_count: int, min_words: int, reason: str = "too_few_words") -> None:
        # The arguments are kept as ``args`` so the exception survives pickling between workers.
        super().__init__(word_count, min_words, reason)
        self.word_count = word_count
        self.min_words = min_words
        self.reason = reason

    def __str__(self) -> str:
        # Counts only: the transcript's own text must never end up in an error message or log.
        return (
            f"transcript too short for a note ({self.reason}): "
            f"{self.word_count} words, minimum {self.min_words}"
        )


# ---------------------------------------------------------------------------------------------
# Keyword tables
#
# Patterns are written as spoken, with accents; matching folds case and accents on both sides.
# A pattern matches whole words. ``word*`` matches any word starting with ``word``; ``{n}`` matches
# a number, in digits or spelled out ("trinta e nove", "twenty-four"). No pattern reaches across
# a comma or an ellipsis, so "de doze em doze, cinco dias" is not a return "em doze ... dias".
# Folding makes "dê" the preposition "de" and "dá" the contraction "da": such words are either
# matched with their accents (ACCENTED_INSTRUCTIONS) or left out.
# ---------------------------------------------------------------------------------------------

NUMBER_WORDS: dict[str, tuple[str, ...]] = {
    "pt": (
        "zero", "um", "uma", "dois", "duas", "três", "quatro", "cinco", "seis", "sete", "oito",
        "nove", "dez", "onze", "doze", "treze", "catorze", "quatorze", "quinze", "dezesseis",
        "dezessete", "dezoito", "dezenove", "vinte", "trinta", "quarenta", "cinquenta", "sessenta",
        "setenta", "oitenta", "noventa", "cem", "cento", "duzentos", "duzentas", "trezentos",
        "quatrocentos", "quinhentos", "mil", "meio", "meia",
    ),
    "en": (
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
        "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
        "hundred", "thousand", "half", "couple",
    ),
    "es": (
        "cero", "un", "uno", "una", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho",
        "nueve", "diez", "once", "doce", "trece", "catorce", "quince", "dieciséis", "diecisiete",
        "dieciocho", "diecinueve", "veinte", "veintiuno", "veintidós", "veintitrés",
        "veinticuatro", "veinticinco", "veintiséis", "veintisiete", "veintiocho", "veintinueve",
        "treinta", "cuarenta", "cincuenta", "sesenta", "setenta", "ochenta", "noventa", "cien",
        "ciento", "doscientos", "trescientos", "quinientos", "mil", "medio", "media",
    ),
}
"""Spelled-out numbers, as the recogniser writes what people say ("trinta e nove e meio")."""

# Words that join or hedge the parts of a spoken number ("trinta e nove", "uns três", "about two").
NUMBER_JOINERS: tuple[str, ...] = ("e", "y", "and", "vírgula", "coma", "point", "ponto", "a")
NUMBER_HEDGES: tuple[str, ...] = (
    "uns", "umas", "unos", "unas", "about", "around", "cerca de", "mais ou menos", "a", "the",
)

GREETINGS: dict[str, tuple[str, ...]] = {
    "pt": (
        "bom dia", "boa tarde", "boa noite", "olá", "oi", "tudo bem", "tudo bom", "obrigado",
        "obrigada", "muito obrigado", "muito obrigada", "de nada", "com licença", "por favor",
        "pode entrar", "pode sentar", "entra", "tchau", "até logo", "até mais", "doutor",
        "doutora", "combinado", "tá bom", "tá", "ok", "sim",
    ),
    "en": (
        "hello", "hi", "hey", "good morning", "good afternoon", "good evening", "thank you",
        "thanks", "please", "come in", "come on in", "have a seat", "take a seat", "bye",
        "goodbye", "see you", "okay", "ok", "doctor", "how are you", "nice to see you",
        "good to see you", "got it", "right", "yes",
    ),
    "es": (
        "hola", "buenos días", "buenas tardes", "buenas noches", "buenas", "gracias",
        "muchas gracias", "por favor", "pase", "adiós", "hasta luego", "doctor", "doctora",
        "vale", "de acuerdo", "perfecto",
    ),
}
"""Courtesies and fillers that carry no clinical content: not counted towards ``min_words``."""

DISCOURSE_MARKERS: dict[str, tuple[str, ...]] = {
    "pt": (
        "então", "olha", "ó", "ah", "ai", "hum", "bom", "bem", "tá", "tá bom", "isso", "ok",
        "certo", "entendi", "ótimo", "perfeito", "nossa", "exatamente", "sabe", "doutor",
        "doutora", "calma", "olha só", "inclusive", "aliás", "sim",
    ),
    "en": (
        "so", "um", "uh", "well", "okay", "ok", "right", "oh", "actually", "yeah", "yes",
        "alright", "now",
    ),
    "es": (
        "pues", "mire", "mira", "bueno", "vale", "a ver", "ah", "exacto", "perfecto",
        "entonces", "oiga", "sí",
    ),
}
"""Openers dropped from the start of a sentence when a comma or stop follows them ("Então, ...",
"Well, ..."): they add nothing to a clinical note."""

LEADING_CONJUNCTIONS: dict[str, tuple[str, ...]] = {
    "pt": ("e", "mas", "então", "aí"),
    "en": ("and", "but", "so"),
    "es": ("y", "pero", "pues", "entonces"),
}
"""Conjunctions dropped from the start of a sentence, where they only link it to the last one."""

TAG_QUESTIONS: dict[str, tuple[str, ...]] = {
    "pt": ("né", "sabe", "viu", "tá", "certo", "não é"),
    "en": ("right", "okay", "isn't it", "don't you", "you know"),
    "es": ("verdad", "no", "vale", "sabe"),
}
"""Trailing tags, after a comma, that make a statement sound like a question ("Ele veio pra
vacina, né?"); such a sentence is a statement. Without the comma ("como é que tá?") it is a real
question."""

COMPLAINT: dict[str, tuple[str, ...]] = {
    "pt": (
        "está com", "tá com", "tava com", "estava com", "não come", "não quer comer",
        "parou de comer", "comendo pouco", "comendo pouquinho", "come pouco", "vomit*", "vômito*",
        "diarreia", "tosse", "tossindo", "espirr*", "coçando", "coceira", "coça", "mancando",
        "manca", "dor", "doendo", "dói", "sangue", "sangrando", "babando", "baba", "tremendo",
        "tremor*", "convuls*", "desmai*", "caiu", "cansad*", "cansando", "cansaço", "febre",
        "bebendo água", "bebe muita água", "água demais", "xixi", "urinando", "bafo",
        "mau hálito", "mastiga", "devagar", "inchad*", "inchaço", "caroço", "carocinho",
        "ferida*", "machuc*", "queixa", "começou a", "piorou", "emagreceu", "prostrad*",
        "apátic*", "quietinho", "encolhido", "lambendo", "balançando a cabeça", "cheiro*",
        "secreção", "cocô", "fezes", "o problema", "queria falar", "caixa de areia",
        "respirando", "falta de ar", "engasg*",
    ),
    "en": (
        "i've had", "i have had", "i've been", "has been", "have been", "since", "hurts",
        "hurt", "pain", "painful", "ache*", "aching", "sore", "fever", "cough*", "vomit*",
        "diarrh*", "sneez*", "itch*", "rash", "swollen", "swelling", "bleed*", "blood in",
        "tired", "fatigue", "dizz*", "nause*", "short of breath", "breathless*", "can't sleep",
        "trouble", "problem", "worse", "limp*", "lump", "not eating", "stopped eating",
        "upset stomach", "headache*",
    ),
    "es": (
        "está con", "tiene los", "tiene una", "tiene un", "le duele", "duele", "dolor",
        "cojea*", "cojera", "vomit*", "vómito*", "diarrea", "tos", "tose", "tosiendo",
        "estornud*", "picor", "se rasca", "rascando", "sangre", "fiebre", "no come",
        "dejó de comer", "come menos", "lloros*", "lagaña*", "legaña*", "secreción", "hinchad*",
        "empezó", "problema", "no la apoya", "no lo apoya", "cansad*",
    ),
}
"""Symptoms and complaint statements ("está com", "não come", "hurts", "está con")."""

VISIT_REASON: dict[str, tuple[str, ...]] = {
    "pt": (
        "veio pra", "veio para", "veio fazer", "vacinar", "vacinação", "reforço", "check up",
        "checkup", "consulta de rotina", "é o retorno", "revisão",
    ),
    "en": (
        "check up", "checkup", "month check", "year check", "review", "here for",
        "vaccination", "vaccinate*", "booster", "routine", "annual",
    ),
    "es": (
        "vacunar", "vacunación", "refuerzo", "revisión", "control", "chequeo", "viene a",
        "viene para",
    ),
}
"""Reasons for a visit that is not a complaint (vaccination, check-up, return visit)."""

HISTORY: dict[str, tuple[str, ...]] = {
    "pt": (
        "faz {n}", "há {n}", "faz tempo", "faz um tempo", "um tempão", "desde", "ontem",
        "anteontem", "hoje de manhã", "semana passada", "mês passado", "ano passado",
        "no começo", "começou", "antes", "já teve", "teve", "vacina*", "vermífug*",
        "antipulga*", "ração", "come", "comendo", "comida", "dieta", "petisco*", "apetite",
        "bebe", "castrad*", "cio", "tomou", "remédio", "xarope", "dei", "deu", "alergi*",
        "alérgic*", "cirurgia", "operad*", "sempre", "nunca", "anos", "mudança", "mudamos",
        "obra", "estresse", "passeio*", "respiração", "dormindo", "xixi", "cocô", "fezes",
        "urina", "jejum", "vezes", "vizinh*", "quintal", "lixo", "pet shop", "banho", "tinha",
        "tava", "estava", "emagreceu", "não sai de casa", "corrimento", "normal", "em dia",
        "atrasad*", "feno", "fruta*", "sachê", "molhad*",
        "se esconde*", "escondid*", "escondendo", "melhorou", "melhorando",
    ),
    "en": (
        "since", "ago", "last night", "last week", "last month", "last year", "yesterday",
        "days", "weeks", "months", "years", "for {n}", "history", "allerg*", "took", "taking",
        "medication*", "pills", "diet", "eating", "appetite", "vaccin*", "surgery", "family",
        "mother", "father", "brother", "sister", "daughter", "son", "husband", "wife", "smok*",
        "alcohol", "previous*", "before", "always", "never", "walking", "exercise", "started",
        "kindergarten", "contact", "at work", "lifted", "lifting", "helped", "healthy",
        "weight loss", "bladder", "bowel*", "numbness", "settled", "shaky", "sweaty", "checked",
        "came down", "had", "getting on", "penicillin",
        "hiding", "improved", "improving", "better since",
    ),
    "es": (
        "hace {n}", "desde", "ayer", "semana pasada", "mes pasado", "año pasado", "come",
        "comiendo", "comida", "dieta", "apetito", "vacun*", "desparasit*", "tomando",
        "le he dado", "le di", "medicament*", "alergi*", "antes", "siempre", "nunca", "adopt*",
        "refugio", "castrad*", "esterilizad*", "pasear", "paseo", "parque", "se cayó",
        "mejorado", "por la mañana", "corriendo", "sábado", "domingo", "lunes", "martes",
        "miércoles", "jueves", "viernes", "otro gato", "otro perro",
        "se esconde*", "escondid*", "mejoró", "mejorando",
    ),
}
"""History: onset and duration, diet, vaccination, previous illness and medication, context."""

EXAM_MARKERS: dict[str, tuple[str, ...]] = {
    "pt": (
        "vamos pesar", "vamos examinar", "deixa eu examinar", "vou examinar", "deixa eu ver",
        "vamos ver", "exame físico", "sobe na balança", "na balança", "deixa eu olhar",
        "deixa eu ouvir",
    ),
    "en": (
        "let me examine", "let me have a look", "let me check you", "let me take a look",
        "let me feel", "let me listen", "on examination", "examine you", "check you over",
    ),
    "es": (
        "vamos a revisar*", "vamos a pesar*", "déjeme ver", "vamos a ver", "voy a revisar*",
        "voy a examinar*",
    ),
}
"""Announcements that the examination starts; they mark the phase but are not findings."""

VITALS: dict[str, tuple[str, ...]] = {
    "pt": (
        "temperatura", "{n} quilo*", "{n} kg", "peso", "pesa", "batimentos",
        "frequência cardíaca", "frequência respiratória", "{n} por minuto", "pressão arterial",
        "tpc", "preenchimento capilar",
        "{n} aqui na balança", "{n} na balança",
    ),
    "en": (
        "temperature", "{n} kilo*", "{n} kg", "{n} pounds", "weight today", "weighs",
        "heart rate", "pulse", "blood pressure", "respiratory rate", "{n} per minute",
        "{n} over {n}", "oxygen saturation",
        "{n} on the scale",
    ),
    "es": (
        "temperatura", "{n} kilo*", "{n} kg", "pesa", "peso", "frecuencia cardíaca",
        "frecuencia respiratoria", "{n} por minuto", "latidos", "presión arterial",
        "{n} en la báscula", "{n} en la balanza",
    ),
}
"""Measurements taken in the examination; one of these starts the examination phase."""

EXAM: dict[str, tuple[str, ...]] = {
    "pt": (
        "mucosa*", "auscult*", "palpação", "palpei", "pulmão", "pulmões", "coração", "sopro",
        "crepitação", "estalinhos", "desidrat*", "hidratad*", "linfonodo*", "gânglio*",
        "abdômen", "barriga", "pele", "pelagem", "ouvido", "orelha", "tímpano", "olho*", "boca",
        "dente*", "gengiva", "tártaro", "bexiga", "estômago", "intestino", "pupila*",
        "salivação", "tremores", "secreção", "vermelh*", "inflamad*", "íntegro", "limpo",
        "limpinho", "sem dor", "sente dor", "dor quando", "aumentad*", "nódulo", "catarata",
        "vulva", "distendid*", "rosad*", "firme", "duro", "corpo estranho", "examin*",
        "pente fino", "pulga*", "pelos crescendo", "mole", "mexe", "grudado",
        "saudável", "bom estado geral", "obstruíd*",
    ),
    "en": (
        "auscult*", "palpat*", "tender*", "swollen", "exudate", "tonsils", "lymph nodes",
        "nodes", "neck", "chest", "lung*", "crackles", "wheez*", "breath sounds", "i can hear",
        "heart sounds", "murmur", "abdomen", "reflexes",
        "sensation", "strength", "straight leg raise", "spasm", "clear", "pulses", "sores",
        "feet", "skin", "eyes", "ears", "throat", "examin*", "mucous", "redness",
        "healthy", "good general condition", "obstructed",
    ),
    "es": (
        "mucosa*", "auscult*", "palpación", "corazón", "pulmón", "soplo", "deshidrat*",
        "ganglio*", "abdomen", "barriga", "piel", "ojo*", "conjuntiva", "córnea", "úlcera",
        "crepitantes", "sibilancias", "ruidos",
        "nariz", "moco", "rodilla", "cadera", "tobillo", "inflamad*", "le duele",
        "movimiento de cajón", "tibia", "limpio", "roja", "rojo", "tinción", "secreción",
        "sano", "sana", "buen estado general", "obstruid*",
    ),
}
"""Examination findings: body systems, signs and how they were examined."""

ASSESSMENT: dict[str, tuple[str, ...]] = {
    "pt": (
        "diagnóstico", "suspeita", "suspeito", "parece ser", "parece um", "parece uma",
        "provavelmente", "provável", "quadro de", "penso em", "eu penso",
        "me faz pensar", "sugestivo", "compatível", "confirmou", "confirmad*", "o que ele tem",
        "o que ela tem", "doença", "insuficiência", "intoxicação", "infecção", "alergia",
        "alérgica", "estase", "lipoma", "tumor", "fratura", "diabetes", "controlad*",
        "saudável", "emergência", "grave", "benigno", "cinomose", "parvovirose",
        "leishmaniose", "giardíase", "erliquiose", "obstruíd*", "otite", "rinite", "colite",
        "uveíte",
        "pode ser",
    ),
    "en": (
        "diagnosis", "i think", "it looks like", "looks like", "looks very likely",
        "this is a", "this is an", "consistent with", "suggest*", "likely", "probably",
        "confirm*", "strain", "infection", "disease", "diabetes", "positive", "results",
        "cholesterol", "on the high side", "progress", "classic picture", "no sign of",
        "function is normal", "otitis", "colitis", "uveitis",
        "could be", "might be",
    ),
    "es": (
        "diagnóstico", "sospecha", "sospecho", "pienso en", "parece", "probablemente",
        "probable", "se rompió", "rotura", "ligamento", "infección", "enfermedad", "compatible",
        "confirm*", "herpesvirus", "virus", "es muy común", "otitis", "rinitis", "colitis",
        "uveítis",
        "puede ser",
    ),
}
"""How a clinician states a diagnosis or a suspicion, and common diagnoses."""

# Long disease names ending in -ite/-itis (gastroenterite, dermatite, tonsillitis) mark a
# diagnosis; short ones (otite, colite) are listed in ASSESSMENT because too many short words and
# verb forms share the ending ("noite", "evite"). These longer ordinary words share it too.
DIAGNOSIS_SUFFIX_EXCEPTIONS: frozenset[str] = frozenset(
    {
        "apetite", "favorite", "favourite", "opposite", "definite", "infinite", "requisite",
        "exquisite", "limite", "palpite", "convite", "satelite", "satellite", "dinamite",
        "parasite", "despite", "acredite", "permite", "transmite", "admite", "compite",
        "remite", "submite", "granite",
    }
)

PLAN: dict[str, tuple[str, ...]] = {
    "pt": (
        "vamos fazer", "vou fazer", "a gente faz", "a gente vai", "vou pedir", "vou colher",
        "colho", "colher", "exame*", "hemograma", "bioquímico", "glicose", "urinálise",
        "raio x", "radiografia", "ultrassom", "ecocardiograma", "citologia", "biópsia",
        "cultura", "internad*", "internação", "observação", "soro", "fluidoterapia",
        "cirurgia", "limpeza", "anestesia", "extração", "extraíd*", "tosa", "procedimento",
        "encaminh*", "vou aplicar", "aplicar", "tratamento", "pegar a veia", "ligar o soro",
        "não vou passar", "remédio nenhum", "nenhum remédio", "suspens*", "suspender",
        "repito", "marco",
        "repouso absoluto", "repouso relativo", "muito repouso", "bastante repouso",
        "fazer repouso", "ficar de repouso", "isolar", "isolad*", "compressa*", "calor local",
    ),
    "en": (
        "we will", "we'll", "i'll", "let's", "i'm going to", "plan", "test", "swab", "x ray",
        "blood test", "refer*", "physiotherapy", "screening", "repeat", "increase", "start",
        "stop", "swap", "scan", "ultrasound", "imaging", "don't need", "changes",
        "bed rest", "get some rest", "plenty of rest", "heat", "stay active", "isolate",
    ),
    "es": (
        "vamos a", "hacemos", "haremos", "le voy a hacer", "radiografía*", "ecografía",
        "análisis", "sedación", "cirugía", "operar*", "tratamiento", "lo decidimos",
        "empezamos",
        "mucho reposo", "reposo absoluto", "reposo relativo", "hacer reposo", "guardar reposo",
        "aislar*", "separarla", "separarlo", "calor local",
    ),
}
"""Tests, procedures, referrals and treatment decisions."""

DRUG_NAMES: tuple[str, ...] = (
    # Antibiotics and antimicrobials
    "amoxicilina", "amoxicillin", "clavulanato", "clavulánico", "clavulanate", "cefalexina",
    "cephalexin", "enrofloxacin*", "marbofloxacin*", "doxiciclina", "doxycycline",
    "azitromicina", "azithromycin", "claritromicina", "clarithromycin", "metronidazol*",
    "ciprofloxacin*", "cloranfenicol", "gentamicin*", "tobramicin*", "tobramycin",
    "antibiótico", "antibiotic", "antibiotics",
    # Anti-inflammatories and analgesics
    "meloxicam", "carprofeno", "carprofen", "firocoxib", "dipirona", "metamizol", "tramadol",
    "gabapentin*", "paracetamol", "acetaminophen", "ibuprofen*", "aspirin*", "prednisolon*",
    "prednison*", "dexametasona", "dexamethasone", "betametasona", "betamethasone",
    # Gastrointestinal
    "omeprazol*", "ranitidina", "ondansetron*", "maropitant", "metoclopramid*", "simeticona",
    "simethicone", "sucralfato",
    # Cardiac, renal, metabolic
    "furosemid*", "pimobendan", "benazepril", "enalapril", "espironolactona", "spironolactone",
    "atenolol", "amlodipin*", "insulin*", "metformin*", "atorvastatin*", "sinvastatina",
    "simvastatin", "levotiroxina", "levothyroxine", "salbutamol", "albuterol", "loratadin*",
    "cetirizin*", "clotrimazol*", "cetoconazol*", "ketoconazole", "atropina", "atropine",
    "ringer", "ringer lactato",
    # Parasite control
    "ivermectina", "ivermectin", "milbemicina", "praziquantel", "fenbendazol", "sarolaner",
    "fluralaner", "afoxolaner", "selamectina", "fipronil", "vermífugo", "antipulgas",
    # Vaccines and topical products
    "vacina", "vacuna", "vaccine", "antirrábica", "quádrupla", "óctupla", "déctupla", "v8",
    "v10", "ceruminolítico", "colírio", "colirio", "pomada", "papinha",
)
"""Common drug and product names in pt, en and es: a sentence naming one with a dose is a
prescription. Shared across languages because drug names barely change between them."""

DOSE: dict[str, tuple[str, ...]] = {
    "pt": (
        "{n} miligrama*", "{n} mg", "{n} mililitro*", "{n} ml", "{n} comprimido*",
        "{n} cápsula*", "{n} gota*", "por quilo", "{n} unidade*", "{n} gramas",
    ),
    "en": (
        "{n} milligram*", "{n} mg", "{n} millilit*", "{n} ml", "{n} tablet*", "{n} capsule*",
        "{n} drop*", "per kilo", "{n} units",
    ),
    "es": (
        "{n} miligramo*", "{n} mg", "{n} mililitro*", "{n} ml", "{n} comprimido*",
        "{n} pastilla*", "{n} gota*", "por kilo",
    ),
}
"""An amount: a number with its unit. The bare word "dose" is no dose ("ajustar a dose")."""

ROUTE: dict[str, tuple[str, ...]] = {
    "pt": (
        "pela boca", "via oral", "oral", "embaixo da pele", "subcutâne*", "na veia",
        "intravenos*", "intramuscular", "no ouvido", "na orelha", "no olho", "nos olhos",
        "tópic*",
    ),
    "en": (
        "by mouth", "orally", "oral", "subcutaneous*", "under the skin", "into the vein",
        "intravenous*", "intramuscular", "in each eye", "in the ear", "topical*",
    ),
    "es": (
        "por boca", "por vía oral", "vía oral", "debajo de la piel", "subcutáne*",
        "en la vena", "intravenos*", "intramuscular", "en cada ojo", "en el oído", "tópic*",
    ),
}
"""How a medicine is given."""

FREQUENCY: dict[str, tuple[str, ...]] = {
    "pt": (
        "vez ao dia", "vezes ao dia", "vez por dia", "vezes por dia", "a cada {n} hora*",
        "a cada {n} dia*", "de {n} em {n} horas", "por {n} dia*", "durante {n} dia*",
        "uso contínuo", "todo mês", "todo dia", "todos os dias", "se necessário", "em jejum",
        "de manhã", "à noite", "antes de comer", "com comida",
    ),
    "en": (
        "every {n} hour*", "every {n} day*", "twice a day", "once a day", "twice daily",
        "once daily", "{n} times a day", "at night", "for {n} day*", "for up to {n} day*",
        "long term", "once a month", "when you need it", "as needed", "with food",
        "with breakfast",
    ),
    "es": (
        "al día", "veces al día", "vez al día", "cada {n} hora*", "cada {n} día*",
        "durante {n} día*", "por {n} día*", "si lo necesita", "con la comida",
    ),
}
"""How often and for how long a medicine is given."""

PRESCRIBING: dict[str, tuple[str, ...]] = {
    "pt": (
        "vou passar", "vou receitar", "vou prescrever", "prescrevo", "vou dar", "vou te dar",
        "receita", "vou aplicar", "aplicar", "pra casa", "para casa", "coloca",
    ),
    "en": ("prescribe", "i'd give", "start", "take", "increase", "swap", "give"),
    "es": ("le voy a dar", "le receto", "recet*", "ponga", "le pone", "dele", "dale"),
}
"""Verbs a clinician prescribes or administers with."""

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "pt": (
        "ofereça", "oferece", "evite", "evita", "mantenha", "mantém", "não deixe",
        "não deixa", "deixa água", "nada de", "não pode", "pode dar", "coloca", "coloque", "leva",
        "lave", "lava", "limpe", "aspira", "procura", "recolhe", "conversa", "conta", "anota",
        "mede", "usa", "use", "traz", "traga", "me liga", "ligue", "me avisa", "avisa",
        "cuidado", "atenção", "importante", "em casa", "à vontade", "jejum", "repouso",
        "passeios", "sem forçar", "fica só", "comecem", "coloquem", "tenham", "não tira",
        "é normal", "se ele", "se ela", "se tiver", "se der", "se precisar", "se passar",
        "se inchar", "vem", "venha", "volta pra ração", "ração úmida", "amolece",
        "você dá", "você coloca", "você passa", "você oferece", "você faz",
    ),
    "en": (
        "give", "avoid", "keep", "make sure", "don't", "do not", "drink", "stay", "finish",
        "take it", "with food", "try", "rest", "if you", "if it", "let me know", "call",
        "go to", "go straight", "watch out", "plenty", "should", "get up", "apply", "step back",
        "is better than", "keep up",
    ),
    "es": (
        "dele", "dale", "le da", "evite", "mantenga", "no le dé", "nunca le dé", "ponga",
        "limpia", "limpie", "lave", "lavarse", "separe", "separarla", "conviene", "paseos",
        "reposo", "si ve", "si deja", "la trae", "lo trae", "llame", "me llama", "suspende",
        "nada de", "solo con correa", "en ayunas", "ayuno",
    ),
}
"""What the owner or patient is told to do, avoid or watch for at home."""

ACCENTED_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "pt": ("dê",),
    "en": (),
    "es": ("dé",),
}
"""Instructions matched with their accents, because folded they are the preposition "de"."""

URGENT: dict[str, tuple[str, ...]] = {
    "pt": (
        "traz na hora", "vem na hora", "liga na hora", "leva na hora", "imediatamente",
        "urgente", "urgência", "emergência", "qualquer horário", "traz antes", "antes disso",
    ),
    "en": ("straight away", "immediately", "emergency", "right away", "urgent*", "hospital"),
    "es": ("enseguida", "urgencia", "de inmediato", "inmediatamente", "emergencia"),
}
"""Words that make a "come back" an immediate warning (owner instructions), not a follow-up."""

FOLLOW_UP: dict[str, tuple[str, ...]] = {
    "pt": (
        "retorno", "retornar", "volte", "voltar em", "reavaliar", "reavalio", "reavalia",
        "reavaliação", "revisão", "próxima consulta", "a próxima", "o próximo", "te ligo",
        "marcar", "agendar", "agendamos", "quero ver", "resultados saem", "sai em",
    ),
    "en": (
        "follow up", "come back", "see you", "see me", "review", "book another appointment",
        "appointment", "next week", "next month", "in a week", "in a month",
    ),
    "es": (
        "revisión", "vuelva", "volver", "control", "la próxima", "le llamo", "nos vemos",
    ),
}
"""Return visits, reassessment and promised calls."""

RETURN_INTERVAL: dict[str, tuple[str, ...]] = {
    "pt": ("daqui a {n}", "em {n} dia*", "em {n} semana*", "em {n} mes*", "em {n} ano*"),
    "en": ("in {n} day*", "in {n} week*", "in {n} month*", "in {n} year*"),
    "es": ("en {n} día*", "en {n} semana*", "en {n} mes*", "dentro de {n}"),
}
"""When the next visit or contact is: a strong follow-up signal, unlike treatment durations
("por sete dias", "for ten days"), which belong to prescriptions."""

SPEAKER_ALIASES: dict[str, str] = {
    "doctor": "doctor",
    "clinician": "doctor",
    "physician": "doctor",
    "vet": "doctor",
    "veterinarian": "doctor",
    "patient": "patient",
    "owner": "patient",
    "tutor": "patient",
    "client": "patient",
}

ABBREVIATIONS: frozenset[str] = frozenset(
    {"dr", "dra", "sr", "sra", "srta", "mr", "mrs", "ms", "st", "vs", "etc", "approx", "aprox"}
)

# Sections a patient or owner can speak into: they report the complaint and the history, while
# findings, diagnoses, treatments and instructions come from the clinician (a patient repeating a
# dose back is a read-back, not a new fact).
PATIENT_SECTIONS: frozenset[str] = frozenset({"chief_complaint", "anamnesis"})

# When two sections score the same, the more specific one wins.
TIE_PRIORITY: tuple[str, ...] = (
    "prescriptions",
    "follow_up",
    "owner_instructions",
    "assessment",
    "physical_exam",
    "plan",
    "anamnesis",
)

MAX_CHIEF_COMPLAINT_SENTENCES = 3
MAX_VISIT_REASONS = 2
MAX_AFFIRMED_SYMPTOMS = 2
# How far into the consultation a visit reason still counts as the chief complaint.
VISIT_REASON_OPENING_SENTENCES = 6
# A short sentence whose words were all said in the last few sentences is a read-back.
READBACK_MAX_WORDS = 12
READBACK_WINDOW = 4
# Sentences of one speaker are joined across segments only up to this length: unpunctuated
# recogniser output would otherwise become one endless sentence.
MAX_JOINED_WORDS = 60

OPEN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "pt": (
        "o que {any} acontecendo", "o que aconteceu", "o que houve", "o que traz", "o que trouxe",
        "o que te traz", "em que posso ajudar", "o que foi", "qual o problema", "qual é o problema",
        "o que ele tem", "o que ela tem", "o que você tem", "o que a senhora tem", "o que o senhor tem",
    ),
    "en": (
        "what brings you", "what can i do for you", "how can i help", "what seems to be",
        "what's going on", "what is going on", "what's the problem", "what's wrong",
        "what happened", "what's been happening", "what brought you",
    ),
    "es": (
        "qué le pasa", "qué les pasa", "qué te pasa", "qué le notaron", "qué le ha pasado",
        "qué ha pasado", "qué les trae", "qué le trae", "en qué le puedo ayudar", "qué tiene",
        "qué le ocurre",
    ),
}
"""Open questions asking for the complaint: their answer stands alone and is not joined to them."""

YES_NO: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "pt": (
        frozenset({"sim", "é", "claro", "isso", "tá", "exato", "exatamente", "uhum", "aham", "com certeza"}),
        frozenset({"não", "nada", "nenhum", "nenhuma", "nunca", "jamais"}),
    ),
    "en": (
        frozenset({"yes", "yeah", "yep", "yup", "sure", "definitely", "absolutely", "correct"}),
        frozenset({"no", "nope", "nothing", "none", "never", "not"}),
    ),
    "es": (
        frozenset({"sí", "claro", "eso", "exacto", "correcto", "efectivamente"}),
        frozenset({"no", "nada", "ninguno", "ninguna", "nunca", "jamás"}),
    ),
}
"""Words that open a yes or a no answer: such an answer only makes sense with its question."""

AMBIGUOUS_YES: frozenset[str] = frozenset({"e", "ta", "isso", "eso", "claro"})
"""Yes words that are also ordinary words ("É pastosa", "Tá comendo"): a yes only when alone."""

CONTRAST_WORDS: frozenset[str] = frozenset({"mas", "but", "pero", "porém", "except", "excepto"})

# An answer is joined to the question it answers ("E o apetite?" - "Come que é uma beleza")
# when it cannot stand alone: it is short, opens with yes or no, or answers a bare topic question.
QA_SHORT_ANSWER_WORDS = 6
QA_TOPIC_QUESTION_WORDS = 4
QA_TOPIC_ANSWER_WORDS = 12
QA_MAX_FOLLOWING = 3
# A clinician's short reply to the patient's question ("Is it strep?" - "It looks very likely.").
QA_REVERSE_ANSWER_WORDS = 4

# In the treatment talk, a clinician's sentence that matches no section, of at least this many
# words, joins the section of the sentence next to it in the same turn, when that is one of these.
CONTINUATION_MIN_WORDS = 5
CONTINUED_SECTIONS: frozenset[str] = frozenset(
    {"physical_exam", "assessment", "plan", "prescriptions", "owner_instructions", "follow_up"}
)

# A sentence also feeds a second section when it scores there at least this much (and this share
# of its best score): "vai ficar internada vinte e quatro horas" is an assessment and a plan.
SECONDARY_MIN_SCORE = 1.0
SECONDARY_MIN_SHARE = 0.0
MAX_SECONDARY = 2

# ---------------------------------------------------------------------------------------------
# Pattern compilation
# ---------------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^\w|]+|_+")
_CLAUSE_BREAK = re.compile(r"[,;:()\[\]…]|\.{2,}")
_DECIMAL = re.compile(r"(?<=\d)[.,](?=\d)")
_BARRIER = "|"
_SIGNALS: dict[str, dict[str, tuple[str, ...]]] = {
    "complaint": COMPLAINT,
    "visit_reason": VISIT_REASON,
    "history": HISTORY,
    "exam_marker": EXAM_MARKERS,
    "vital": VITALS,
    "exam": EXAM,
    "assessment": ASSESSMENT,
    "plan": PLAN,
    "dose": DOSE,
    "route": ROUTE,
    "frequency": FREQUENCY,
    "prescribing": PRESCRIBING,
    "instruction": INSTRUCTIONS,
    "urgent": URGENT,
    "follow_up": FOLLOW_UP,
    "interval": RETURN_INTERVAL,
}


def _fold(text: str) -> str:
    """Lowercase, strip accents and reduce punctuation to spaces, keeping clause breaks as ``|``.

    Patterns only ever match words and spaces, so the ``|`` tokens stop a pattern from matching
    across two clauses.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace(_BARRIER, " "))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    bare = _DECIMAL.sub(" ", bare)
    bare = _CLAUSE_BREAK.sub(f" {_BARRIER} ", bare)
    return " ".join(_NON_WORD.sub(" ", bare).split())


def _words(folded: str) -> list[str]:
    return [w for w in folded.split() if w != _BARRIER]


def _alternation(options: Iterable[str]) -> str:
    # Longest first, so "trinta" is not cut short by "trin..." and phrases beat their prefixes.
    folded = sorted({_fold(o) for o in options if _fold(o)}, key=len, reverse=True)
    return "|".join(r"\s".join(map(re.escape, o.split())) for o in folded)


def _number_regex(languages: Sequence[str]) -> str:
    words = _alternation(w for lang in languages for w in NUMBER_WORDS[lang])
    one = rf"(?:\d+|{words})"
    joiner = _alternation(NUMBER_JOINERS)
    hedge = _alternation(NUMBER_HEDGES)
    return rf"(?:(?:{hedge})\s)?{one}(?:\s(?:(?:{joiner})\s)?{one})*"


def _pattern_regex(pattern: str, number: str) -> str:
    pieces: list[str] = []
    for token in pattern.split():
        if token == "{n}":
            pieces.append(number)
        else:
            prefix = token.endswith("*")
            words = _fold(token.rstrip("*")).split()
            piece = r"\s".join(map(re.escape, words))
            pieces.append(piece + (r"\w*" if prefix else ""))
    return r"\s".join(pieces)


def _compile(patterns: Iterable[str], number: str) -> re.Pattern[str]:
    ordered = sorted(set(patterns), key=len, reverse=True)
    body = "|".join(f"(?:{_pattern_regex(p, number)})" for p in ordered)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)")


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern[str]:
    """Case-insensitive regex over unfolded text, for trimming openers off the original words."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    body = "|".join(r"\s+".join(map(re.escape, p.split())) for p in ordered)
    return re.compile(body, re.IGNORECASE)


@dataclass(frozen=True)
class _Lexicon:
    """Every table compiled for one set of keyword languages."""

    signals: dict[str, re.Pattern[str]]
    accented_instructions: re.Pattern[str] | None
    drugs: re.Pattern[str]
    greetings: re.Pattern[str]
    greeting_words: frozenset[str]
    leading: re.Pattern[str]
    tag_question: re.Pattern[str]


@functools.lru_cache(maxsize=8)
def _lexicon(languages: tuple[str, ...]) -> _Lexicon:
    number = _number_regex(languages)
    signals = {
        name: _compile((p for lang in languages for p in table[lang]), number)
        for name, table in _SIGNALS.items()
    }
    greetings = [g for lang in languages for g in GREETINGS[lang]]
    markers = [m for lang in languages for m in DISCOURSE_MARKERS[lang]]
    conjunctions = [c for lang in languages for c in LEADING_CONJUNCTIONS[lang]]
    tags = [t for lang in languages for t in TAG_QUESTIONS[lang]]
    accented = [a for lang in languages for a in ACCENTED_INSTRUCTIONS[lang]]
    # An opener must be followed by punctuation ("Olha, ele..."), a conjunction by a space ("E ontem
    # à noite..."), so a word that only starts like one ("Okay" / "Ok", "Ele" / "E") stays whole.
    leading = re.compile(
        rf"^(?:(?:{_phrase_regex(markers).pattern})\s*[,.;:!…]+\s*"
        rf"|(?:{_phrase_regex(conjunctions).pattern})\s+(?=\w))",
        re.IGNORECASE,
    )
    tag_question = re.compile(rf",\s*¿?(?:{_phrase_regex(tags).pattern})\s*\?+\s*$", re.IGNORECASE)
    return _Lexicon(
        signals=signals,
        accented_instructions=(
            re.compile(rf"(?<!\w)(?:{'|'.join(map(re.escape, accented))})(?!\w)") if accented else None
        ),
        drugs=_compile(DRUG_NAMES, number),
        greetings=re.compile(rf"(?<!\w)(?:{_alternation(greetings)})(?!\w)"),
        greeting_words=frozenset(w for g in greetings for w in _words(_fold(g))),
        leading=leading,
        tag_question=tag_question,
    )


def _keyword_languages(language: str) -> tuple[str, ...]:
    # An unknown language is matched against every table, English first, so a note is still
    # possible when the language tag is wrong or missing.
    if language in SUPPORTED_LANGUAGES:
        return (language,)
    return (FALLBACK_LANGUAGE, *(lang for lang in SUPPORTED_LANGUAGES if lang != FALLBACK_LANGUAGE))


# ---------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TERMINAL = re.compile(r"[.!?…]\s*$")
_DIAGNOSIS_WORD = re.compile(r"(?<!\w)(\w{4,}(?:ite|itis))(?!\w)")


@dataclass
class _Sentence:
    text: str
    segments: list[int]
    speaker: str
    # (offset in ``text``, segment index) where each segment's part of the text starts.
    pieces: list[tuple[int, int]] = field(default_factory=list)
    folded: str = ""
    question: bool = False
    hits: dict[str, int] = field(default_factory=dict)
    # Set on a question-and-answer view: the question's text, prefixed to the answer, and
    # whether the answer was a "no".
    topic: str = ""
    negative: bool = False


def _normalise_speaker(speaker: str) -> str:
    key = speaker.strip().lower().removeprefix("speaker_")
    return SPEAKER_ALIASES.get(key, "unspecified")


def _split_text(text: str) -> list[str]:
    """Split on sentence-ending punctuation, but not on an ellipsis or after an abbreviation.

    An ellipsis in speech is a pause ("a temperatura... trinta e nove"), not the end of a thought.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()]
        if before.endswith("..") or before.endswith("…"):
            continue
        last_word = before.rstrip(".").rsplit(None, 1)[-1].lower() if before.strip(". ") else ""
        if before.endswith(".") and last_word in ABBREVIATIONS:
            continue
        pieces.append(before)
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def _split_sentences(segments: Sequence[TranscriptSegment]) -> list[_Sentence]:
    sentences: list[_Sentence] = []
    pending: _Sentence | None = None
    for index, segment in enumerate(segments):
        speaker = _normalise_speaker(segment.speaker)
        pieces = _split_text(segment.text)
        if not pieces:
            continue
        if pending is not None and pending.speaker != speaker:
            sentences.append(pending)
            pending = None
        for position, piece in enumerate(pieces):
            if position == 0 and pending is not None:
                pending.pieces.append((len(pending.text) + 1, index))
                pending.text = f"{pending.text} {piece}"
                pending.segments.append(index)
                current = pending
                pending = None
            else:
                current = _Sentence(text=piece, segments=[index], speaker=speaker, pieces=[(0, index)])
            is_last = position == len(pieces) - 1
            unfinished = not _TERMINAL.search(current.text)
            if is_last and unfinished and len(current.text.split()) < MAX_JOINED_WORDS:
                pending = current
            else:
                sentences.append(current)
    if pending is not None:
        sentences.append(pending)
    return sentences


def _analyse(sentence: _Sentence, lexicon: _Lexicon) -> None:
    text = sentence.text.strip()
    is_tagged = bool(lexicon.tag_question.search(text))
    sentence.question = text.endswith("?") and not is_tagged
    sentence.folded = _fold(text)
    hits = {name: len(set(regex.findall(sentence.folded))) for name, regex in lexicon.signals.items()}
    if lexicon.accented_instructions is not None:
        spelled = unicodedata.normalize("NFC", text).casefold()
        hits["instruction"] += len(set(lexicon.accented_instructions.findall(spelled)))
    hits["drug"] = len(set(lexicon.drugs.findall(sentence.folded)))
    hits["diagnosis_word"] = len(
        {w for w in _DIAGNOSIS_WORD.findall(sentence.folded) if w not in DIAGNOSIS_SUFFIX_EXCEPTIONS}
    )
    sentence.hits = hits


def _has_content(sentence: _Sentence, lexicon: _Lexicon) -> bool:
    return any(w not in lexicon.greeting_words for w in _words(sentence.folded))


def _clinical_word_count(segments: Sequence[TranscriptSegment], lexicon: _Lexicon) -> int:
    return sum(len(_words(lexicon.greetings.sub(" ", _fold(s.text)))) for s in segments)


def _content_words(folded: str, lexicon: _Lexicon) -> set[str]:
    return {w for w in _words(folded) if len(w) > 2 and w not in lexicon.greeting_words}


def _is_readback(sentences: Sequence[_Sentence], index: int, lexicon: _Lexicon) -> bool:
    """A short sentence whose every word was just said: someone repeating a dose or a date back.

    Only statements count as what was just said: an answer that repeats the question's words
    ("Ele é castrado?" - "Castrado.") is a fact, not a read-back.
    """
    sentence = sentences[index]
    words = _content_words(sentence.folded, lexicon)
    if not words or len(_words(sentence.folded)) > READBACK_MAX_WORDS:
        return False
    recent: set[str] = set()
    for earlier in sentences[max(0, index - READBACK_WINDOW) : index]:
        if not earlier.question:
            recent |= _content_words(earlier.folded, lexicon)
    return words <= recent


# ---------------------------------------------------------------------------------------------
# Questions and their answers
# ---------------------------------------------------------------------------------------------


def _turn_starts(sentences: Sequence[_Sentence]) -> list[int]:
    """For each sentence, the index of the first sentence of its turn.

    A turn is what one speaker says before the other speaks; without diarization, one segment.
    """
    starts: list[int] = []
    for i, sentence in enumerate(sentences):
        if i == 0:
            starts.append(0)
            continue
        previous = sentences[i - 1]
        same = sentence.speaker == previous.speaker and (
            sentence.speaker != "unspecified" or bool(set(sentence.segments) & set(previous.segments))
        )
        starts.append(starts[-1] if same else i)
    return starts


@dataclass(frozen=True)
class _Answer:
    """An answer that needs its question: ``questions`` and ``answer`` (first sentence, then
    ``following`` short ones of the same turn) are sentence indices."""

    questions: tuple[int, ...]
    answer: int
    following: tuple[int, ...]
    negative: bool


def _strip_question(text: str, lexicon: _Lexicon) -> str:
    """A question as a topic: openers and tags dropped, no question mark ("E o apetite?" ->
    "o apetite")."""
    topic = text.strip().lstrip("¡¿-–—\"' ")
    while True:
        trimmed = lexicon.leading.sub("", topic, count=1).lstrip("¡¿ ")
        if trimmed == topic or not re.search(r"\w", trimmed):
            break
        topic = trimmed
    return topic.rstrip(" ?!.,;:¿…")


@functools.lru_cache(maxsize=8)
def _open_question_regex(language: str) -> re.Pattern[str]:
    languages = (language,) if language in OPEN_QUESTIONS else tuple(OPEN_QUESTIONS)
    # "{any}" stands for one or two words ("o que tá acontecendo", "o que está acontecendo").
    body = "|".join(
        r"\s(?:\w+\s)?\w+\s".join(r"\s".join(map(re.escape, _fold(part).split())) for part in phrase.split("{any}"))
        for lang in languages
        for phrase in OPEN_QUESTIONS[lang]
    )
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)")


def _is_open_question(text: str, language: str) -> bool:
    return bool(_open_question_regex(language).search(_fold(text)))


def _answer_kind(text: str, language: str, lexicon: _Lexicon) -> tuple[bool, bool]:
    """(opens with yes or no, is a "no") for an answer sentence."""
    yes, no = YES_NO.get(language, (frozenset(), frozenset()))
    cleaned = _clean(text, lexicon)
    folded = _fold(cleaned)
    words = _words(folded)
    if not words:
        return False, False
    folded_yes = {_fold(w) for w in yes}
    folded_no = {_fold(w) for w in no}
    # The opener itself may be the yes ("Yeah, I checked...", "Sim, tá em dia"), so the words
    # before cleaning count too. A yes that is also a verb ("É pastosa", "Tá comendo") only
    # counts on its own: "É, o reforço anual.".
    raw = _words(_fold(text))[:1]

    def yes_or_no(word: str, said: str) -> bool:
        if word in folded_no:
            return True
        alone = re.match(r"\s*[¡¿\"']*\w+\s*(?:[,.!;…]|$)", said) is not None
        return word in folded_yes and (word not in AMBIGUOUS_YES or alone)

    opens = yes_or_no(words[0], cleaned) or bool(raw and yes_or_no(raw[0], text))
    negative = words[0] in folded_no or bool(raw and raw[0] in folded_no)
    # "Desmaiar, não." / "Nenhuma." : a short answer holding a no and no "but".
    if not negative and len(words) <= 4 and any(w in folded_no for w in words):
        negative = not any(w in {_fold(c) for c in CONTRAST_WORDS} for w in words)
        opens = opens or negative
    if negative and any(w in {_fold(c) for c in CONTRAST_WORDS} for w in words):
        negative = len(words) <= 3
    return opens, negative


def _link_answers(
    sentences: Sequence[_Sentence], language: str, lexicon: _Lexicon
) -> dict[int, _Answer]:
    """Answers that only make sense with the question they answer, by answer index.

    The questions are the run of questions that ends a turn; the answer is the next turn's first
    sentence when it is short, opens with yes or no, or answers a bare topic question ("E o
    apetite?"), followed by its next short sentences ("Ah, isso tem um tempão. Uns seis meses.").
    Several questions answered by as many sentences are answered in order ("Come bem? Está
    tomando algo?" - "Come perfectamente. No, no le he dado nada."). A clinician's answer to the
    patient's question is joined only when very short ("Is it strep?" - "It looks very likely.").
    """
    starts = _turn_starts(sentences)
    linked: dict[int, _Answer] = {}
    for i in range(1, len(sentences)):
        if starts[i] != i:
            continue
        questions: list[int] = []
        for k in reversed(range(starts[i - 1], i)):
            if not sentences[k].question:
                break
            questions.insert(0, k)
        if not questions or any(_is_open_question(sentences[q].text, language) for q in questions):
            continue
        asker = sentences[questions[0]].speaker
        # The answer turn's statements, courtesies ("Bom dia, doutor.") left out.
        answers: list[int] = []
        k = i
        while k < len(sentences) and starts[k] == i:
            if not sentences[k].question and _has_content(sentences[k], lexicon):
                answers.append(k)
            k += 1
        if not answers or (asker != "unspecified" and asker == sentences[answers[0]].speaker):
            continue
        pairs = [((q,), a) for q, a in zip(questions, answers, strict=False)]
        paired = (
            len(questions) > 1
            and len(answers) >= len(questions)
            and all(_share_a_word(sentences[q].text, sentences[a].text) for (q,), a in pairs)
        )
        if not paired:
            pairs = [(tuple(questions), answers[0])]
        for asked, first in pairs:
            answer = _link_one(sentences, asked, first, answers, language, lexicon, alone=not paired)
            if answer is not None:
                linked[first] = answer
    return linked


def _share_a_word(question: str, answer: str) -> bool:
    """Whether an answer takes up a word of the question ("E come o quê?" - "Come só ração"),
    comparing the first three letters of words of four or more."""
    stems = lambda text: {w[:3] for w in _words(_fold(text)) if len(w) >= 4}  # noqa: E731
    return bool(stems(question) & stems(answer))


def _link_one(
    sentences: Sequence[_Sentence],
    questions: tuple[int, ...],
    first: int,
    turn: Sequence[int],
    language: str,
    lexicon: _Lexicon,
    *,
    alone: bool = True,
) -> _Answer | None:
    """The answer ``first`` joined to ``questions`` when it cannot stand alone, else ``None``.
    ``alone``: the only answer of its turn, which may go on in the next short sentences."""
    answer = sentences[first]
    asker = sentences[questions[0]].speaker
    words = len(_words(_fold(_clean(answer.text, lexicon))))
    opens, negative = _answer_kind(answer.text, language, lexicon)
    topic_words = sum(len(_words(_fold(_strip_question(sentences[q].text, lexicon)))) for q in questions)
    if answer.speaker == "doctor" and asker == "patient":
        joined = words <= QA_REVERSE_ANSWER_WORDS
    else:
        joined = (
            words <= QA_SHORT_ANSWER_WORDS
            or opens
            or (topic_words <= QA_TOPIC_QUESTION_WORDS and words <= QA_TOPIC_ANSWER_WORDS)
        )
    if not joined:
        return None
    following: list[int] = []
    # A yes or a no is a whole answer; an elliptical one ("Ah, isso aí tem um tempão.") goes on
    # in the next short sentences ("Uns seis meses. Não cresceu, não.").
    if alone and len(questions) == 1 and not opens and words <= QA_SHORT_ANSWER_WORDS:
        for k in turn[turn.index(first) + 1 :]:
            if (
                k != first + len(following) + 1
                or len(following) >= QA_MAX_FOLLOWING
                or len(_words(_fold(_clean(sentences[k].text, lexicon)))) > QA_SHORT_ANSWER_WORDS
            ):
                break
            following.append(k)
    return _Answer(tuple(questions), first, tuple(following), negative)


def _lower_first(text: str) -> str:
    """``text`` with a lowercase first letter, unless it starts an acronym or is English "I"."""
    if not text or (len(text) > 1 and text[1].isupper()) or re.match(r"I\b", text):
        return text
    return text[0].lower() + text[1:]


_OPENING_WORD = re.compile(r"^\s*[¡¿\"']*(\w+)\s*[,.!;…]\s*")


def _clean_answer(text: str, lexicon: _Lexicon) -> str:
    """An answer cleaned like any sentence, but keeping the yes or no it opens with ("Yes,
    since yesterday.", "Não, nunca."): with its question, that word is the fact."""
    opening = _OPENING_WORD.match(text)
    if opening is not None:
        word = _fold(opening.group(1))
        if any(word in {_fold(w) for w in yes | no} for yes, no in YES_NO.values()):
            rest = _clean(text[opening.end() :], lexicon)
            return f"{opening.group(1)}, {_lower_first(rest)}" if rest else _clean(text, lexicon)
    return _clean(text, lexicon)


def _qa_text(answer: _Answer, sentences: Sequence[_Sentence], lexicon: _Lexicon) -> tuple[str, str]:
    """(topic, "topic: answer. following.") for a linked answer, in the words said."""
    topic = "; ".join(
        t for t in (_strip_question(sentences[q].text, lexicon) for q in answer.questions) if t
    )
    parts = [_clean_answer(sentences[answer.answer].text, lexicon)]
    parts += [_clean(sentences[k].text, lexicon) for k in answer.following]
    body = _lower_first(" ".join(p for p in parts if p))
    if topic:
        topic = topic[0].upper() + topic[1:]
    return topic, f"{topic}: {body}" if topic else body


def _views(
    sentences: Sequence[_Sentence], linked: dict[int, _Answer], lexicon: _Lexicon
) -> tuple[list[_Sentence], frozenset[int]]:
    """The sentences as the note sees them: each linked answer carries its question, and the
    short sentences it absorbed are left out on their own."""
    views = list(sentences)
    absorbed: set[int] = set()
    for index, answer in linked.items():
        topic, text = _qa_text(answer, sentences, lexicon)
        members = (*answer.questions, answer.answer, *answer.following)
        segments = sorted({seg for k in members for seg in sentences[k].segments})
        view = _Sentence(
            text=text,
            segments=segments,
            speaker=sentences[index].speaker,
            topic=topic,
            negative=answer.negative,
        )
        _analyse(view, lexicon)
        view.question = False
        views[index] = view
        absorbed.update(answer.following)
    return views, frozenset(absorbed)


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phases:
    """Where the clinical phase (examination onwards) and the treatment talk begin."""

    exam_start: int
    treatment_start: int

    def of(self, index: int) -> str:
        if index < self.exam_start:
            return "history"
        return "exam" if index < self.treatment_start else "treatment"


def _is_finding(sentence: _Sentence) -> bool:
    return bool(sentence.hits["exam"] or sentence.hits["vital"])


def _phases(sentences: Sequence[_Sentence]) -> _Phases:
    """Split the consultation into history, examination and treatment talk."""
    clinician = [not s.question and s.speaker != "patient" for s in sentences]
    exam_start = len(sentences)
    for i, s in enumerate(sentences):
        if not clinician[i]:
            continue
        if s.hits["vital"]:
            exam_start = i
            break
        if s.hits["exam_marker"]:
            following = range(i + 1, min(i + 4, len(sentences)))
            # Only an announcement followed by findings starts the exam ("a ver, chiquita" does not).
            if any(clinician[j] and _is_finding(sentences[j]) for j in following):
                exam_start = i
                break

    def diagnoses_or_treats(i: int) -> bool:
        h = sentences[i].hits
        return clinician[i] and bool(h["assessment"] or h["diagnosis_word"] or (h["drug"] and h["dose"]))

    if exam_start == len(sentences):
        # No examination was spoken: the clinical phase starts with the first diagnosis or
        # treatment, but never in the opening quarter, where such words are still history.
        later = range(len(sentences) // 4, len(sentences))
        exam_start = next((i for i in later if diagnoses_or_treats(i)), exam_start)
    treatment_start = next(
        (i for i in range(exam_start + 1, len(sentences)) if diagnoses_or_treats(i)), len(sentences)
    )
    return _Phases(exam_start=exam_start, treatment_start=treatment_start)


def _scores(sentence: _Sentence, phase: str) -> dict[str, float]:
    """How strongly a sentence belongs to each section, given the phase of the consultation."""
    h = sentence.hits
    scores: dict[str, float] = {}

    medication_detail = h["dose"] + h["route"] + h["frequency"] + h["prescribing"]
    if h["drug"] and medication_detail:
        scores["prescriptions"] = 2 + h["drug"] + min(medication_detail, 3)
    elif h["dose"] and (h["route"] or h["frequency"]):
        # A product named in the previous breath ("quatro gotas na orelha, a cada doze horas").
        scores["prescriptions"] = 1 + h["dose"] + h["route"] + h["frequency"]

    # "Vamos examinar" / "vamos a pesarla" announce the examination; they are neither a finding
    # nor a plan.
    scores["physical_exam"] = max(h["exam"] + 2 * h["vital"] - h["exam_marker"], 0)
    scores["plan"] = max(h["plan"] - h["exam_marker"], 0)
    scores["assessment"] = 1.5 * h["assessment"] + 2 * h["diagnosis_word"]
    scores["owner_instructions"] = h["instruction"] + h["urgent"]
    follow_up = h["follow_up"] + 3 * h["interval"]
    # "Come back straight away if..." is a warning sign for the owner, not a scheduled return.
    scores["follow_up"] = 0 if h["urgent"] and not h["interval"] else follow_up
    scores["anamnesis"] = h["history"] + h["complaint"]

    if phase == "history":
        # Medicines mentioned before the examination are what the patient already takes.
        scores["anamnesis"] = 1.5 * scores["anamnesis"] + h["drug"] + h["dose"] + h["frequency"]
        for label in ("prescriptions", "assessment", "plan", "owner_instructions", "follow_up"):
            scores[label] = scores.get(label, 0) * 0.4
        if not h["vital"]:
            scores["physical_exam"] *= 0.4
    else:
        scores["anamnesis"] *= 0.4
        if phase == "treatment" and not h["vital"]:
            # Once the diagnosis is given, body parts are mostly where a treatment goes.
            scores["physical_exam"] *= 0.5

    if sentence.speaker == "patient":
        scores = {k: v for k, v in scores.items() if k in PATIENT_SECTIONS}
    return scores


def _best(scores: dict[str, float]) -> str | None:
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], TIE_PRIORITY.index(kv[0])))
    if not ranked or ranked[0][1] < 1:
        return None
    return ranked[0][0]


_WH_WORDS = re.compile(
    r"(?<!\w)(?:quant[oa]s?|quando|como|o que|qual|quais|onde|por que|porque|desde quando|how|what|"
    r"when|where|which|why|who|cuant[oa]s?|cuando|que|cual|cuales|donde|por que|desde cuando)(?!\w)"
)


_ALL_NORMAL = re.compile(
    r"(?<!\w)(?:normal|normais|normalzinh\w*|tudo bem|tudo certo|otimo|otima|fine|ok|okay|good|"
    r"well|bien|todo bien|perfect\w*)(?!\w)"
)


def _affirmed_symptom(view: _Sentence) -> bool:
    """A yes to the clinician's yes/no question about a symptom ("Have you had a fever?" -
    "Yeah, ...", "Ela tá cansando mais?" - "Nossa, muito."); "Tudo normal." affirms nothing."""
    answer = _fold(view.text[len(view.topic) + 1 :]) if view.topic else ""
    return bool(
        view.topic
        and not view.negative
        and view.speaker != "doctor"
        and not _WH_WORDS.search(_fold(view.topic))
        and not _ALL_NORMAL.search(answer)
        and view.hits.get("complaint")
    )


def _chief_complaint(
    sentences: Sequence[_Sentence], candidates: Sequence[int], exam_start: int
) -> list[int]:
    """Indices of the opening complaint: the first complaint statement and its continuation.

    The complaint is the patient's or owner's (or an unattributed) statement; when speakers are
    known, the patient's own words win. A clinician only contributes by naming the reason for the
    visit before any complaint ("hoje é o retorno da dermatite"). Symptoms the patient affirms
    when asked before the examination ("Have you had a fever?" - "Yeah...") complete it.
    """
    opening = [i for i in candidates if i < exam_start]
    complaints = [
        i
        for i in opening
        if sentences[i].speaker != "doctor" and sentences[i].hits["complaint"] and not sentences[i].topic
    ]
    by_patient = [i for i in complaints if sentences[i].speaker == "patient"]
    complaints = by_patient or complaints

    chosen: list[int] = []
    # A reason stated before the complaint leads it (with its confirmation: "Ele veio pra vacina,
    # né?" - "É, o reforço anual."); one mentioned later is history.
    reasons = [
        i
        for i in opening
        if sentences[i].hits["visit_reason"]
        and i < VISIT_REASON_OPENING_SENTENCES
        and (not complaints or i < complaints[0])
    ]
    chosen.extend(reasons[:MAX_VISIT_REASONS])
    if complaints:
        first = complaints[0]
        chosen.append(first)
        turn = set(sentences[first].segments)
        previous = first
        # The complaint goes on while it stays complaint-like, in the same turn or right after.
        for i in complaints[1:]:
            continues = bool(turn & set(sentences[i].segments)) or i == previous + 1
            if not continues or len(chosen) >= MAX_CHIEF_COMPLAINT_SENTENCES:
                break
            chosen.append(i)
            previous = i
    affirmed = [i for i in opening if _affirmed_symptom(sentences[i]) and i not in chosen]
    chosen.extend(affirmed[:MAX_AFFIRMED_SYMPTOMS])
    return sorted(chosen)


# Onset and duration words: a chief complaint sentence holding one also belongs to the history.
_ONSET = re.compile(
    r"(?<!\w)(?:desde|faz|ha|ontem|anteontem|since|ago|for|yesterday|last|hace|ayer|days?|"
    r"dias?|semanas?|weeks?|meses|months?|comecou|started|empezo)(?!\w)"
)


@dataclass(frozen=True)
class _Classification:
    """Where each sentence goes: ``assigned`` lists the sentences of each section (a sentence
    can feed several), ``primary`` the one section each sentence belongs to most."""

    assigned: dict[str, list[int]]
    phases: _Phases
    readbacks: frozenset[int]
    primary: dict[int, str] = field(default_factory=dict)

    def section_of(self, index: int) -> str | None:
        return self.primary.get(index)


def _secondary(scores: dict[str, float], best: str) -> list[str]:
    """Other sections a sentence carries facts of: each scoring at least ``SECONDARY_MIN_SCORE``
    and ``SECONDARY_MIN_SHARE`` of the best."""
    top = scores[best]
    ranked = sorted(
        (
            (label, score)
            for label, score in scores.items()
            if label != best and score >= SECONDARY_MIN_SCORE and score >= SECONDARY_MIN_SHARE * top
        ),
        key=lambda kv: (-kv[1], TIE_PRIORITY.index(kv[0]) if kv[0] in TIE_PRIORITY else len(TIE_PRIORITY)),
    )
    return [label for label, _ in ranked]


def _classify(
    sentences: Sequence[_Sentence],
    lexicon: _Lexicon,
    views: Sequence[_Sentence] | None = None,
    absorbed: frozenset[int] = frozenset(),
) -> _Classification:
    """Place every sentence. ``views`` are the sentences as scored and written (a short answer
    with its question); phases and read-backs are read from the sentences as said."""
    views = sentences if views is None else views
    readbacks = frozenset(i for i in range(len(sentences)) if _is_readback(sentences, i, lexicon))
    candidates = [
        i
        for i, s in enumerate(views)
        if not s.question
        and _has_content(s, lexicon)
        and (i not in readbacks or s.topic)
        and i not in absorbed
    ]
    phases = _phases(sentences)
    turns = _turn_starts(sentences)
    def concludes_exam(i: int) -> bool:
        # Said right after a finding, in the same stretch of speech.
        return i > 0 and phases.of(i - 1) == "exam" and bool(set(sentences[i].segments) & set(sentences[i - 1].segments))
    assigned: dict[str, list[int]] = {label: [] for label in SECTION_LABELS}
    primary: dict[int, str] = {}

    chief = _chief_complaint(views, candidates, phases.exam_start)
    assigned["chief_complaint"] = list(chief)
    complaint_sentences = [i for i in chief if views[i].hits["complaint"] and not views[i].topic]
    retold: list[int] = []
    for i in chief:
        primary[i] = "chief_complaint"
        # The history tells the complaint again with its details: what follows the opening
        # complaint ("It hurts to swallow", "Ele fica quietinho num canto") and when it began.
        dated = bool(views[i].hits["history"] and _ONSET.search(views[i].folded))
        if (dated and not views[i].topic) or (i in complaint_sentences and i != complaint_sentences[0]):
            retold.append(i)
    taken = set(chief)
    for i in candidates:
        if i in taken:
            continue
        view = views[i]
        scores = _scores(view, phases.of(i))
        if view.topic and view.speaker == "patient" and sentences[i].speaker == "patient":
            # What the patient or owner answers the clinician is history.
            scores["anamnesis"] = max(scores.get("anamnesis", 0.0), 1.0)
        label = _best(scores)
        if label is None:
            continue
        primary[i] = label
        assigned[label].append(i)
        extras: list[str] = []
        if label == "assessment" and phases.of(i) == "treatment" and concludes_exam(i):
            # A conclusion drawn as the examination ends ("Tá saudável, pode vacinar", "ele não tá
            # obstruído") is weighed as a finding too.
            scores = {**scores, "physical_exam": _scores(view, "exam").get("physical_exam", 0.0)}
        for extra in _secondary(scores, label):
            # The history is what was told before the examination, not what a warning names.
            if extra in PATIENT_SECTIONS and (phases.of(i) != "history" or view.speaker == "doctor"):
                continue
            # A return visit is no home instruction because it says "se"/"if".
            if label == "follow_up" and extra == "owner_instructions":
                continue
            # Nor is the examination what the treatment talk names ("limpe os olhos com soro"),
            # unless it concludes the examination ("Tá saudável, pode vacinar").
            if extra == "physical_exam" and phases.of(i) != "exam" and not concludes_exam(i):
                continue
            # A warning word alone ("é uma emergência") is no instruction.
            if extra == "owner_instructions" and not view.hits["instruction"]:
                continue
            # A diagnosis is read off a finding ("mucosas secas... desidratação leve"), not off a
            # warning or a prescription that names a disease word.
            if extra == "assessment" and label != "physical_exam":
                continue
            # The plan names every prescribed medicine already (see _treatment_line); what a
            # prescription adds elsewhere is how to give it at home.
            if label == "prescriptions" and extra != "owner_instructions":
                continue
            extras.append(extra)
        for extra in extras[:MAX_SECONDARY]:
            assigned[extra].append(i)
    # A clinician's sentence with no words of its own section goes on the talk around it, in the
    # same turn ("E um difusor de feromônio na tomada ajuda bastante" after the home measures).
    for i in candidates:
        view = views[i]
        if (
            i in primary
            or view.speaker == "patient"
            or view.topic
            or phases.of(i) != "treatment"
            or view.hits["exam_marker"]
            or len(_words(view.folded)) < CONTINUATION_MIN_WORDS
        ):
            continue
        for j in (i - 1, i + 1):
            label = primary.get(j)
            if 0 <= j < len(views) and turns[j] == turns[i] and label in CONTINUED_SECTIONS:
                primary[i] = label
                assigned[label].append(i)
                break
    # ...when there is a history to tell: a note whose history only repeats the complaint has none.
    if assigned["anamnesis"]:
        assigned["anamnesis"].extend(retold)
    return _Classification(
        assigned={label: sorted(set(idx)) for label, idx in assigned.items() if idx},
        phases=phases,
        readbacks=readbacks,
        primary=primary,
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _clean(text: str, lexicon: _Lexicon) -> str:
    """Tidy a spoken sentence for the note without adding a word: trim openers and tags,
    capitalise, end with a full stop."""
    cleaned = text.strip().lstrip("¡¿-–—\"' ")
    cleaned = lexicon.tag_question.sub("", cleaned)
    # Openers can stack ("Então, olha, ele..."); stop when nothing is left to keep.
    while True:
        trimmed = lexicon.leading.sub("", cleaned, count=1).lstrip("¡¿ ")
        if trimmed == cleaned or not re.search(r"\w", trimmed):
            break
        cleaned = trimmed
    cleaned = cleaned.rstrip(" ,;:-–—")
    cleaned = re.sub(r"!+$", ".", cleaned)
    if not re.search(r"\w", cleaned):
        return ""
    if not _TERMINAL.search(cleaned):
        cleaned += "."
    return cleaned[0].upper() + cleaned[1:]


def _sentence(text: str, segments: Iterable[int], times: Sequence[SegmentTimes]) -> Sentence:
    ordered = tuple(sorted(set(segments)))
    return Sentence(
        text=text,
        source_segments=ordered,
        start_ms=min(times[i].start_ms for i in ordered),
        end_ms=max(times[i].end_ms for i in ordered),
    )


def _render(
    indices: Sequence[int],
    sentences: Sequence[_Sentence],
    lexicon: _Lexicon,
    times: Sequence[SegmentTimes],
) -> list[Sentence]:
    """The sentences of one section, cleaned, each with its provenance."""
    rendered: list[Sentence] = []
    seen: set[str] = set()
    for i in indices:
        text = _clean(sentences[i].text, lexicon)
        # The same sentence said twice ("Sete dias." ... "Sete dias.") is written once.
        if not text or _fold(text) in seen:
            continue
        seen.add(_fold(text))
        rendered.append(_sentence(text, sentences[i].segments, times))
    return rendered


# The form a medicine comes in, said before its name: "a pomada otológica de clotrimazol",
# "colirio de tobramicina", "eye drops of ...".
_FORM = re.compile(
    r"(?<!\w)(?:pomada|colirio|comprimido|xarope|spray|shampoo|xampu|suspensao|creme|gel|solucao|"
    r"gotas|capsula|injecao|ointment|eye drops|ear drops|drops|cream|syrup|inhaler|tablets?|"
    r"crema|jarabe|pomada|inyeccion|champu)(?:\s[a-z]+){0,2}?\s(?:de|do|da|of|con|com)\s$"
)


def _product(medication: Medication) -> str:
    """A medicine's name with the form said right before it ("pomada otológica de clotrimazol +
    gentamicina + betametasona"), or its name alone."""
    name = medication.name
    text = medication.text
    if not text:
        return name
    aligned = fold_aligned(text)
    first = _fold(name).split()
    if not first:
        return name
    at = re.search(rf"(?<!\w){re.escape(first[0])}", aligned)
    if at is None:
        return name
    form = _FORM.search(aligned[: at.start()])
    if form is None:
        return name
    return f"{text[form.start() : at.start()]}{name}"


def _treatment_line(
    medications: Sequence[Medication], plan: Sequence[Sentence], times: Sequence[SegmentTimes]
) -> Sentence | None:
    """The plan names what is given or prescribed, in the words said ("Omeprazol, metronidazol."),
    unless the plan's own sentences already name it."""
    plan_text = _fold(" ".join(s.text for s in plan))
    names: list[str] = []
    segments: set[int] = set()
    for medication in medications:
        folded = _fold(medication.name)
        if not folded or folded in plan_text or any(_fold(n) == folded for n in names):
            continue
        names.append(_product(medication))
        segments.update(medication.source_segments)
    if not names or not segments:
        return None
    text = ", ".join(names) + "."
    return _sentence(text[0].upper() + text[1:], segments, times)


# Measurements the structured vitals do not hold: a sentence naming one stays as said.
_OTHER_MEASURES = re.compile(
    r"(?<!\w)(?:pressao|pressure|presion|over|saturac\w*|saturation|oxigenio|oxygen|oxigeno|glicemia|"
    r"glucose|glucosa|tpc|preenchimento|capilar|capillary)(?!\w)"
)
# Words of a sentence that only reads out a vital sign: labels, units, spoken numbers, fillers
# and plain qualifiers ("Agora a temperatura... trinta e nove e quatro, um pouquinho alta.").
_VITAL_ONLY_WORDS: frozenset[str] = frozenset(
    """
    peso pesa pesando pesou quilos quilo kg kgs kilos kilo kilogramos quilogramas weight weighs
    temperatura temperature graus grados degrees coracao corazon heart rate frequencia frecuencia
    cardiaca respiratoria respiratory respiracao respiracion breathing batimentos batidas latidos
    beats bpm lpm por minuto minutos per minute pulse pulso balanca bascula balanza scale na no en
    on the a o e y and de da do is es esta ta tá your sua seu su aqui agora hoje now today ahora
    hoy here normal alta alto baixa baixo elevada high low bit um uma pouco pouquinho poquito un
    little slightly ligeramente meio media medio tambem also tambien
    """.split()
)


def _only_vitals(folded: str) -> bool:
    words = _words(folded)
    numbers = {_fold(w) for lang in NUMBER_WORDS for w in NUMBER_WORDS[lang]} | {
        _fold(w) for w in NUMBER_JOINERS
    }
    has_number = any(w.isdigit() or w in numbers for w in words)
    return has_number and all(w in _VITAL_ONLY_WORDS or w in numbers or w.isdigit() for w in words)


def _vitals_line(
    indices: Sequence[int],
    views: Sequence[_Sentence],
    vitals: Vitals,
    language: str,
    times: Sequence[SegmentTimes],
) -> tuple[Sentence | None, set[int]]:
    """One line with the vital signs as finally read ("Peso 30,5 kg; temperatura 39,4 °C; ..."),
    citing the segments each value came from, and the examination sentences it stands for:
    short sentences that only give a weight, temperature, heart or breathing rate (a corrected
    reading such as "Trinta e dois quilos." is replaced by the final value)."""
    facts = [(name, getattr(vitals, name)) for name in Vitals.FIELDS if getattr(vitals, name) is not None]
    if not facts:
        return None, set()
    cited = {segment for _, fact in facts for segment in fact.source_segments}
    replaced = {
        i
        for i in indices
        if views[i].hits["vital"]
        and not views[i].topic
        and views[i].speaker != "patient"
        and not _OTHER_MEASURES.search(views[i].folded)
        and _only_vitals(views[i].folded)
    }
    if not replaced:
        return None, set()
    text = "; ".join(vital_phrase(name, float(fact.value), language) for name, fact in facts) + "."
    return _sentence(text[0].upper() + text[1:], cited, times), replaced


def _terms_of(view: _Sentence, language: str) -> list[tuple[str, str]]:
    """(term, kind) pairs for the clinical terms of what a sentence says. In an answer joined to
    its question, the question's terms count as said by the answer: affirmed by a yes, denied by
    a no ("Desmaiou? - Não." -> "sem síncope")."""
    drug = bool(view.hits.get("drug"))
    if not view.topic:
        return [(h.term, h.kind) for h in find_terms(view.folded, language, drug=drug)]
    topic = _fold(view.topic)
    answer = _fold(view.text[len(view.topic) + 1 :])
    found: list[tuple[str, str]] = []
    for hit in find_terms(topic, language, drug=drug):
        if not view.negative:
            found.append((hit.term, hit.kind))
        elif hit.kind == "symptom" and not hit.negative:
            found.append((negated(hit.term, language), hit.kind))
    # A short "no" answer only denies ("Desmaiar, não."): its words are no new finding.
    if not (view.negative and len(_words(answer)) <= 4):
        found.extend((h.term, h.kind) for h in find_terms(answer, language, drug=drug))
    return found


def _term_lines(
    classification: _Classification,
    views: Sequence[_Sentence],
    rendered: dict[str, list[Sentence]],
    language: str,
    times: Sequence[SegmentTimes],
) -> dict[str, list[Sentence]]:
    """The clinical terms for what each section's sentences say, one line per source sentence,
    citing it ("A Pipoca tá babando muito... ela caiu" -> "Salivação excessiva, queda.").

    Symptoms go where their sentence is (complaint or history), examination signs to the
    examination, procedures to the plan from wherever the clinician said them after the
    history. A term already written in the section is not repeated.
    """
    lines: dict[str, list[Sentence]] = {}
    written = {label: _fold(" ".join(s.text for s in items)) for label, items in rendered.items()}
    placed: dict[str, set[str]] = {}
    grouped: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    where: dict[int, list[str]] = {}
    for label in SECTION_LABELS:
        for i in classification.assigned.get(label, ()):
            where.setdefault(i, []).append(label)
    for i in sorted(where):
        view = views[i]
        sections_of = where[i]
        by_target: dict[str, list[str]] = {}
        for term, kind in _terms_of(view, language):
            if kind == "symptom":
                # A complaint's terms go with the complaint, not again with its retelling.
                targets = [label for label in KINDS["symptom"] if label in sections_of][:1]
            elif kind == "sign":
                targets = ["physical_exam"] if "physical_exam" in sections_of and view.speaker != "patient" else []
            else:
                clinician = view.speaker != "patient"
                targets = ["plan"] if clinician and classification.phases.of(i) != "history" else []
            for label in targets:
                folded = _fold(term)
                # The history does not repeat a term the complaint already gives.
                same = KINDS["symptom"] if kind == "symptom" else (label,)
                if any(folded in placed.get(other, set()) for other in same) or re.search(
                    rf"(?<!\w){re.escape(folded)}(?!\w)", written.get(label, "")
                ):
                    continue
                placed.setdefault(label, set())
                placed[label].add(folded)
                by_target.setdefault(label, []).append(term)
        for label, terms in by_target.items():
            grouped.setdefault((label, tuple(view.segments)), []).extend(terms)
    # The terms of one stretch of speech make one line, citing it.
    for (label, segments), terms in grouped.items():
        text = ", ".join(terms) + "."
        lines.setdefault(label, []).append(_sentence(text[0].upper() + text[1:], segments, times))
    return lines


# ---------------------------------------------------------------------------------------------
# Structured data
# ---------------------------------------------------------------------------------------------


def _utterances(
    sentences: Sequence[_Sentence], classification: _Classification
) -> list[Utterance]:
    return [
        Utterance(
            index=i,
            text=s.text,
            speaker=s.speaker,
            pieces=tuple(s.pieces),
            question=s.question,
            readback=i in classification.readbacks,
            phase=classification.phases.of(i),
            section=classification.section_of(i),
        )
        for i, s in enumerate(sentences)
    ]


_SPECIES_TABLE_KEYS = {"dog", "cat", "rabbit"}


def _structured(
    utterances: Sequence[Utterance],
    language: str,
    domain: str,
    times: Sequence[SegmentTimes],
) -> StructuredData:
    patient = extract_patient(utterances, language, domain, times)
    vitals = extract_vitals(utterances, language, times)
    medications = extract_medications(utterances, language, times)
    if domain == "human":
        species: str | None = "human"
    elif patient.species is not None and str(patient.species.value) in _SPECIES_TABLE_KEYS:
        species = str(patient.species.value)
    else:
        species = None
    flags = check_medications(
        medications,
        weight_kg=None if vitals.weight_kg is None else float(vitals.weight_kg.value),
        species=species,
        language=language,
    )
    return StructuredData(
        patient=patient,
        vitals=vitals,
        medications=medications,
        diagnoses=extract_diagnoses(utterances, language, times),
        follow_up_days=extract_follow_up_days(utterances, language, times),
        flags=flags,
    )


# ---------------------------------------------------------------------------------------------
# Regeneration instructions
# ---------------------------------------------------------------------------------------------

_SHORTER = re.compile(
    r"(?<!\w)(?:short\w*|brief\w*|concise\w*|summar\w*|curt\w*|breve\w*|resum\w*|"
    r"mais curt\w*|más cort\w*|mas cort\w*|cort\w*)(?!\w)"
)
_OMIT = re.compile(
    r"(?<!\w)(?:omit\w*|without|remove|drop|leave out|skip|no|sem|sin|tir[ae]\w*|remov\w*|"
    r"retir\w*|quit[ae]\w*|elimin\w*|exclu\w*|omitir|omita|não incluir|nao incluir|no incluir)(?!\w)"
)
_SECTION_WORDS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("chief complaint", "complaint", "queixa", "motivo"),
    "anamnesis": ("history", "anamnese", "anamnesis", "historia", "histórico"),
    "physical_exam": ("physical exam", "exam", "examination", "exame", "examen", "examen físico"),
    "assessment": ("assessment", "diagnosis", "avaliação", "diagnóstico", "evaluación"),
    "plan": ("plan", "plano"),
    "prescriptions": ("prescriptions", "prescription", "prescrições", "prescrição", "prescripciones", "receita"),
    "owner_instructions": (
        "owner instructions", "patient instructions", "instructions", "orientações", "orientacoes",
        "indicaciones", "instrucciones",
    ),
    "follow_up": ("follow-up", "follow up", "retorno", "seguimiento", "revisión"),
}
SHORT_NOTE_SENTENCES = 2
"""Sentences kept per section when the instructions ask for a shorter note."""


def _apply_instructions(
    sections: dict[str, list[Sentence]], instructions: str | None
) -> dict[str, list[Sentence]]:
    """Honour the simple regeneration instructions the rules can follow.

    "shorter" / "mais curto" / "más corto" (and brief, concise, resumido...) keep the first
    :data:`SHORT_NOTE_SENTENCES` sentences of each section; "omit owner instructions" / "sem
    orientações" / "sin seguimiento" (omit, without, sem, sin, remove... followed by a section's
    name or title) leave that section out. Anything else is ignored: the rules cannot rewrite
    prose, and the structured data never changes.
    """
    if not instructions or not instructions.strip():
        return sections
    text = instructions.casefold()
    result = dict(sections)
    for clause in re.split(r"[.;\n]|,\s*(?:and|e|y)?\s*|\s+(?:and|e|y)\s+(?=(?:omit|remove|sem|sin|no|without|short|mais|más))", text):
        omit = _OMIT.search(clause)
        if omit:
            after = clause[omit.end():]
            for label, words in _SECTION_WORDS.items():
                if any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", after) for w in words):
                    # "instructions" alone must not also drop the plan's "instructions" word.
                    result.pop(label, None)
                    break
    if _SHORTER.search(text):
        result = {label: items[:SHORT_NOTE_SENTENCES] for label, items in result.items()}
    return result


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def generate_note(
    segments: list[TranscriptSegment],
    language: str,
    *,
    domain: str = "veterinary",
    min_words: int = DEFAULT_MIN_WORDS,
    instructions: str | None = None,
) -> GeneratedNote:
    """Write a sectioned note and its structured data from a consultation transcript, using only
    what was said.

    ``language`` is the consultation's language (pt, en or es; any other is titled in English and
    matched against every keyword table). ``domain`` is ``"veterinary"`` or ``"human"``: it
    changes titles and tells the dose check to use adult human ranges. Sections with nothing to
    say are left out; each section lists its sentences with the segments and times they came
    from. ``note.structured`` holds the patient, vitals, medications, diagnoses, follow-up
    interval and the safety flags raised on doses (see ``structured.py`` and ``safety.py``).

    ``instructions`` are free-text regeneration instructions. The rules honour only "shorter"
    and "omit <section>" in pt, en and es (see ``_apply_instructions``) and ignore the rest.

    Raises:
        TranscriptTooShort: fewer than ``min_words`` words remain once greetings and courtesies
            are removed, or no sentence belongs to any clinical section.
        ValueError: ``domain`` is not a known domain.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain: {domain!r}")
    lang = normalise_language(language)
    lexicon = _lexicon(_keyword_languages(lang))
    lang = lang or FALLBACK_LANGUAGE

    word_count = _clinical_word_count(segments, lexicon)
    if word_count < min_words:
        raise TranscriptTooShort(word_count, min_words)

    times = [SegmentTimes(s.start_ms, s.end_ms) for s in segments]
    sentences = _split_sentences(segments)
    for sentence in sentences:
        _analyse(sentence, lexicon)
    linked = _link_answers(sentences, lang, lexicon)
    views, absorbed = _views(sentences, linked, lexicon)
    classification = _classify(sentences, lexicon, views, absorbed)
    structured = _structured(_utterances(sentences, classification), lang, domain, times)

    rendered: dict[str, list[Sentence]] = {}
    for label in SECTION_LABELS:
        if label in classification.assigned:
            indices = classification.assigned[label]
            if label == "physical_exam":
                line, replaced = _vitals_line(indices, views, structured.vitals, lang, times)
                indices = [i for i in indices if i not in replaced]
                rendered[label] = _render(indices, views, lexicon, times)
                if line is not None:
                    rendered[label].insert(0, line)
                continue
            rendered[label] = _render(indices, views, lexicon, times)
    if any(rendered.values()):
        treatment = _treatment_line(structured.medications, rendered.get("plan", []), times)
        if treatment is not None:
            rendered.setdefault("plan", []).append(treatment)
        for label, lines in _term_lines(classification, views, rendered, lang, times).items():
            rendered.setdefault(label, []).extend(lines)
    if not any(rendered.values()):
        raise TranscriptTooShort(word_count, min_words, reason="no_clinical_content")
    rendered = _apply_instructions(rendered, instructions)

    sections: list[GeneratedSection] = []
    for label in SECTION_LABELS:
        items = rendered.get(label)
        if not items:
            continue
        sources = sorted({i for item in items for i in item.source_segments})
        sections.append(
            GeneratedSection(
                label=label,
                title=title_for(label, lang, domain),
                content=" ".join(item.text for item in items),
                order=len(sections) + 1,
                source_segments=sources,
                sentences=tuple(items),
            )
        )
    return GeneratedNote(
        language=lang, sections=sections, generator=GENERATOR_NAME, structured=structured
    )
