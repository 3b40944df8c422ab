"""Spoken numbers in Portuguese, English and Spanish, as a recogniser writes them, turned into values.

A consultation transcript spells numbers the way people say them: "trinta e nove e quatro" (39.4,
the colloquial Brazilian way of reading a temperature), "trinta vírgula cinco" (30.5), "cento e
vinte" (120), "dois e meio" (2.5), "meio comprimido" (0.5), "thirty-eight point four", "one
thirty-four" (134, a blood pressure read aloud), "treinta y nueve coma dos", "ciento veinte",
"veinticuatro". Digits ("39,4", "39.4", "120") are read too. :func:`find_numbers` finds every
number in a text with its character offsets, so whoever uses a value can cite the words it came
from; :func:`parse_number` reads a text that is one number; :func:`to_digits` rewrites a text with
digits (the evaluation compares key phrases that way).

Only the standard library is used. Words are matched with case and accents folded, against the
tables of the consultation's language: the same word is a number in one language and not in
another ("doce" is twelve in Spanish and "sweet" in Portuguese, "once" eleven or "one time",
"dos" two or "of the"). An unknown language uses the words the three languages share no
conflict on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SpokenNumber",
    "Token",
    "find_numbers",
    "fold",
    "format_number",
    "parse_number",
    "to_digits",
    "tokenize",
]

# ---------------------------------------------------------------------------------------------
# Tables (folded spelling: lowercase, no accents)
# ---------------------------------------------------------------------------------------------

_UNITS = "unit"  # 0-9
_TEEN = "teen"  # 10-19
_TEN = "ten"  # 20, 30 ... 90
_TEN_UNIT = "ten_unit"  # Spanish 21-29 in one word ("veinticuatro")
_HUNDREDS = "hundreds"  # a word worth 100-900 by itself ("cento", "duzentos", "ciento")
_HUNDRED = "hundred"  # English multiplier ("two hundred")
_THOUSAND = "thousand"  # multiplier in every language ("mil", "thousand")

_PT: dict[str, tuple[int, str]] = {
    "zero": (0, _UNITS), "um": (1, _UNITS), "uma": (1, _UNITS), "dois": (2, _UNITS),
    "duas": (2, _UNITS), "tres": (3, _UNITS), "quatro": (4, _UNITS), "cinco": (5, _UNITS),
    "seis": (6, _UNITS), "sete": (7, _UNITS), "oito": (8, _UNITS), "nove": (9, _UNITS),
    "dez": (10, _TEEN), "onze": (11, _TEEN), "doze": (12, _TEEN), "treze": (13, _TEEN),
    "catorze": (14, _TEEN), "quatorze": (14, _TEEN), "quinze": (15, _TEEN),
    "dezesseis": (16, _TEEN), "dezasseis": (16, _TEEN), "dezessete": (17, _TEEN),
    "dezassete": (17, _TEEN), "dezoito": (18, _TEEN), "dezenove": (19, _TEEN),
    "dezanove": (19, _TEEN),
    "vinte": (20, _TEN), "trinta": (30, _TEN), "quarenta": (40, _TEN), "cinquenta": (50, _TEN),
    "cincoenta": (50, _TEN), "sessenta": (60, _TEN), "setenta": (70, _TEN),
    "oitenta": (80, _TEN), "noventa": (90, _TEN),
    "cem": (100, _HUNDREDS), "cento": (100, _HUNDREDS), "duzentos": (200, _HUNDREDS),
    "duzentas": (200, _HUNDREDS), "trezentos": (300, _HUNDREDS), "trezentas": (300, _HUNDREDS),
    "quatrocentos": (400, _HUNDREDS), "quatrocentas": (400, _HUNDREDS),
    "quinhentos": (500, _HUNDREDS), "quinhentas": (500, _HUNDREDS),
    "seiscentos": (600, _HUNDREDS), "seiscentas": (600, _HUNDREDS),
    "setecentos": (700, _HUNDREDS), "setecentas": (700, _HUNDREDS),
    "oitocentos": (800, _HUNDREDS), "oitocentas": (800, _HUNDREDS),
    "novecentos": (900, _HUNDREDS), "novecentas": (900, _HUNDREDS),
    "mil": (1000, _THOUSAND),
}
_EN: dict[str, tuple[int, str]] = {
    "zero": (0, _UNITS), "one": (1, _UNITS), "two": (2, _UNITS), "three": (3, _UNITS),
    "four": (4, _UNITS), "five": (5, _UNITS), "six": (6, _UNITS), "seven": (7, _UNITS),
    "eight": (8, _UNITS), "nine": (9, _UNITS),
    "ten": (10, _TEEN), "eleven": (11, _TEEN), "twelve": (12, _TEEN), "thirteen": (13, _TEEN),
    "fourteen": (14, _TEEN), "fifteen": (15, _TEEN), "sixteen": (16, _TEEN),
    "seventeen": (17, _TEEN), "eighteen": (18, _TEEN), "nineteen": (19, _TEEN),
    "twenty": (20, _TEN), "thirty": (30, _TEN), "forty": (40, _TEN), "fourty": (40, _TEN),
    "fifty": (50, _TEN), "sixty": (60, _TEN), "seventy": (70, _TEN), "eighty": (80, _TEN),
    "ninety": (90, _TEN),
    "hundred": (100, _HUNDRED), "thousand": (1000, _THOUSAND),
}
_ES: dict[str, tuple[int, str]] = {
    "cero": (0, _UNITS), "un": (1, _UNITS), "uno": (1, _UNITS), "una": (1, _UNITS),
    "dos": (2, _UNITS), "tres": (3, _UNITS), "cuatro": (4, _UNITS), "cinco": (5, _UNITS),
    "seis": (6, _UNITS), "siete": (7, _UNITS), "ocho": (8, _UNITS), "nueve": (9, _UNITS),
    "diez": (10, _TEEN), "once": (11, _TEEN), "doce": (12, _TEEN), "trece": (13, _TEEN),
    "catorce": (14, _TEEN), "quince": (15, _TEEN), "dieciseis": (16, _TEEN),
    "diecisiete": (17, _TEEN), "dieciocho": (18, _TEEN), "diecinueve": (19, _TEEN),
    "veinte": (20, _TEN), "veintiun": (21, _TEN_UNIT), "veintiuno": (21, _TEN_UNIT),
    "veintiuna": (21, _TEN_UNIT), "veintidos": (22, _TEN_UNIT), "veintitres": (23, _TEN_UNIT),
    "veinticuatro": (24, _TEN_UNIT), "veinticinco": (25, _TEN_UNIT),
    "veintiseis": (26, _TEN_UNIT), "veintisiete": (27, _TEN_UNIT),
    "veintiocho": (28, _TEN_UNIT), "veintinueve": (29, _TEN_UNIT),
    "treinta": (30, _TEN), "cuarenta": (40, _TEN), "cincuenta": (50, _TEN),
    "sesenta": (60, _TEN), "setenta": (70, _TEN), "ochenta": (80, _TEN), "noventa": (90, _TEN),
    "cien": (100, _HUNDREDS), "ciento": (100, _HUNDREDS), "doscientos": (200, _HUNDREDS),
    "doscientas": (200, _HUNDREDS), "trescientos": (300, _HUNDREDS),
    "trescientas": (300, _HUNDREDS), "cuatrocientos": (400, _HUNDREDS),
    "cuatrocientas": (400, _HUNDREDS), "quinientos": (500, _HUNDREDS),
    "quinientas": (500, _HUNDREDS), "seiscientos": (600, _HUNDREDS),
    "seiscientas": (600, _HUNDREDS), "setecientos": (700, _HUNDREDS),
    "setecientas": (700, _HUNDREDS), "ochocientos": (800, _HUNDREDS),
    "ochocientas": (800, _HUNDREDS), "novecientos": (900, _HUNDREDS),
    "novecientas": (900, _HUNDREDS),
    "mil": (1000, _THOUSAND),
}
_WORDS: dict[str, dict[str, tuple[int, str]]] = {"pt": _PT, "en": _EN, "es": _ES}

# Words that mean something else in another language: left out when the language is unknown.
_AMBIGUOUS = frozenset({"um", "una", "dos", "once", "doce", "un", "uno"})

# "e"/"y"/"and" joins the parts of a number ("cento e vinte", "treinta y nueve", "a hundred and
# five"); after a complete number it starts a colloquial decimal ("trinta e nove e quatro").
_JOINERS: dict[str, frozenset[str]] = {
    "pt": frozenset({"e"}),
    "en": frozenset({"and"}),
    "es": frozenset({"y"}),
}
_DECIMAL_POINTS: dict[str, frozenset[str]] = {
    "pt": frozenset({"virgula", "ponto"}),
    "en": frozenset({"point", "dot"}),
    "es": frozenset({"coma", "punto"}),
}
# A half and a quarter: after "e"/"y"/"and" they add to the number before ("dois e meio"); alone
# they only count before a quantity ("meio comprimido", "half a tablet"), because "meio" is also
# "somewhat" ("meio secas") and "media" "average".
_HALVES: dict[str, frozenset[str]] = {
    "pt": frozenset({"meio", "meia"}),
    "en": frozenset({"half"}),
    "es": frozenset({"medio", "media"}),
}
_QUARTERS: dict[str, frozenset[str]] = {
    "pt": frozenset({"quarto"}),
    "en": frozenset({"quarter"}),
    "es": frozenset({"cuarto"}),
}
# Articles that can stand for one before a multiplier or a fraction ("a hundred", "a half",
# "um quarto").
_ONE_ARTICLES: dict[str, frozenset[str]] = {
    "pt": frozenset({"um", "uma"}),
    "en": frozenset({"a", "one"}),
    "es": frozenset({"un", "una"}),
}

QUANTITY_NOUNS: frozenset[str] = frozenset(
    {
        # pt
        "comprimido", "comprimidos", "capsula", "capsulas", "dose", "doses", "hora", "horas",
        "gota", "gotas", "colher", "colheres", "copo", "copos", "litro", "litros", "mililitro",
        "mililitros", "miligrama", "miligramas", "grama", "gramas", "quilo", "quilos", "dia",
        "dias", "semana", "semanas", "ml", "mg", "kg", "xicara", "pipeta", "ampola", "sache",
        # en
        "tablet", "tablets", "pill", "pills", "capsule", "capsules", "hour", "hours", "drop",
        "drops", "spoon", "teaspoon", "tablespoon", "cup", "liter", "litre", "milliliter",
        "millilitre", "milligram", "milligrams", "gram", "grams", "kilo", "kilos", "day", "days",
        "week", "weeks", "dose", "doses",
        # es
        "pastilla", "pastillas", "capsula", "hora", "horas", "gota", "gotas", "cucharada",
        "cucharadita", "vaso", "miligramo", "miligramos", "gramo", "gramos", "kilo", "kilos",
        "dia", "dias", "semana", "semanas", "dosis", "comprimido", "ampolla",
    }
)
"""Folded nouns a bare fraction may quantify ("meio comprimido", "half a tablet")."""

_FILLERS: dict[str, frozenset[str]] = {
    "pt": frozenset({"de"}),
    "en": frozenset({"a", "an", "of"}),
    "es": frozenset({"de"}),
}

# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+", re.UNICODE)


def fold(text: str) -> str:
    """Lowercase and strip accents: ``"Vírgula"`` -> ``"virgula"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@dataclass(frozen=True)
class Token:
    """A word or a run of digits of a text: its folded form and where it stands in the text.

    ``pause`` is true when punctuation other than a hyphen stands between the previous token and
    this one: a number never runs across it ("coma uno, un poquito" is 1, then "un").
    """

    text: str
    folded: str
    start: int
    end: int
    pause: bool = False


_PAUSE = re.compile(r"[^\s\-‐‑–]")


def tokenize(text: str) -> list[Token]:
    """Words and digit runs of ``text`` with their character offsets (hyphens split words)."""
    tokens: list[Token] = []
    previous_end = 0
    for m in _TOKEN.finditer(text):
        pause = bool(tokens) and bool(_PAUSE.search(text[previous_end : m.start()]))
        tokens.append(Token(m.group(), fold(m.group()), m.start(), m.end(), pause))
        previous_end = m.end()
    return tokens


@dataclass(frozen=True)
class SpokenNumber:
    """A number found in a text: its value and the characters ``text[start:end]`` that say it."""

    value: float
    start: int
    end: int
    text: str

    @property
    def is_integer(self) -> bool:
        return float(self.value).is_integer()


def format_number(value: float) -> str:
    """``39.4`` -> ``"39.4"``, ``120.0`` -> ``"120"``: the shortest faithful decimal form."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lexicon:
    words: dict[str, tuple[int, str]]
    joiners: frozenset[str]
    points: frozenset[str]
    halves: frozenset[str]
    quarters: frozenset[str]
    ones: frozenset[str]
    fillers: frozenset[str]
    english_pairs: bool


def _languages(language: str | None) -> tuple[str, ...]:
    primary = (language or "").strip().lower().replace("_", "-").split("-", 1)[0]
    return (primary,) if primary in _WORDS else ()


def _lexicon(language: str | None) -> _Lexicon:
    languages = _languages(language)
    if languages:
        lang = languages[0]
        return _Lexicon(
            words=_WORDS[lang],
            joiners=_JOINERS[lang],
            points=_DECIMAL_POINTS[lang],
            halves=_HALVES[lang],
            quarters=_QUARTERS[lang],
            ones=_ONE_ARTICLES[lang],
            fillers=_FILLERS[lang],
            english_pairs=lang == "en",
        )
    words: dict[str, tuple[int, str]] = {}
    for table in (_ES, _PT, _EN):
        words.update({w: v for w, v in table.items() if w not in _AMBIGUOUS})

    def union(tables: dict[str, frozenset[str]]) -> frozenset[str]:
        return frozenset().union(*tables.values())

    return _Lexicon(
        words=words,
        joiners=union(_JOINERS),
        points=union(_DECIMAL_POINTS),
        halves=union(_HALVES) - {"media"},
        quarters=union(_QUARTERS),
        ones=frozenset({"a"}),
        fillers=union(_FILLERS),
        english_pairs=True,
    )


def _digits_value(raw: str) -> float:
    """``"39,4"``/``"39.4"`` -> 39.4; ``"1.000"``/``"1,000"`` -> 1000 (three digits after a
    separator group thousands unless the integer part is zero)."""
    parts = re.split(r"[.,]", raw)
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) > 2 or (len(parts[-1]) == 3 and parts[0] not in ("0", "")):
        return float("".join(parts))
    return float(f"{parts[0]}.{parts[1]}")


class _Reader:
    """Reads one number starting at a token index; returns the value and the index after it."""

    def __init__(self, tokens: Sequence[Token], lexicon: _Lexicon) -> None:
        self.tokens = tokens
        self.lex = lexicon

    def _word(self, i: int) -> tuple[int, str] | None:
        if i >= len(self.tokens):
            return None
        return self.lex.words.get(self.tokens[i].folded)

    def _folded(self, i: int) -> str:
        return self.tokens[i].folded if i < len(self.tokens) else ""

    def _paused(self, i: int) -> bool:
        """Punctuation stands before token ``i``: whatever follows is not the same number."""
        return i < len(self.tokens) and self.tokens[i].pause

    def _is_digits(self, i: int) -> bool:
        return i < len(self.tokens) and self.tokens[i].folded[0].isdigit()

    def integer(self, i: int) -> tuple[int, int, str] | None:
        """An integer said in words from token ``i``: (value, next index, kind of its last part)."""
        if self._word(i) is None:
            # "a hundred", "um mil" are caught by the multiplier below; a bare article is no number.
            if self._folded(i) in self.lex.ones and self._word(i + 1) is not None:
                nxt = self._word(i + 1)
                if nxt is not None and nxt[1] in (_HUNDRED, _THOUSAND):
                    return self._continue(0, 1, _UNITS, i + 1)
            return None
        value, kind = self._word(i)  # type: ignore[misc]
        if kind == _HUNDRED:
            return None  # "hundred" alone is no number
        if kind == _THOUSAND:
            return self._continue(1000, 0, kind, i + 1)
        return self._continue(0, value, kind, i + 1)

    def _continue(self, total: int, current: int, kind: str, i: int) -> tuple[int, int, str]:
        """Keep adding parts while the grammar allows; stop before what does not fit."""
        while i < len(self.tokens):
            j = i
            joined = False
            if self._paused(j):
                break
            if self._folded(j) in self.lex.joiners:
                joined = True
                j += 1
            part = self._word(j)
            if part is None or self._paused(j):
                break
            value, part_kind = part
            if part_kind == _THOUSAND:
                if joined:
                    break
                total += max(current, 1) * 1000
                current, kind, i = 0, _THOUSAND, j + 1
                continue
            if part_kind == _HUNDRED:
                if joined or not 1 <= current <= 99 or kind == _HUNDRED:
                    break
                current, kind, i = current * 100, _HUNDRED, j + 1
                continue
            below_hundred = current % 100
            after_hundreds = kind in (_HUNDREDS, _HUNDRED, _THOUSAND) and below_hundred == 0
            if part_kind == _HUNDREDS:
                if current != 0 or kind != _THOUSAND:
                    break
            elif part_kind in (_TEN, _TEEN, _TEN_UNIT):
                if not after_hundreds:
                    # English reads 134 as "one thirty-four" (blood pressure, times).
                    if (
                        self.lex.english_pairs
                        and not joined
                        and total == 0
                        and kind == _UNITS
                        and current in (1, 2)
                        and part_kind in (_TEN, _TEEN)
                    ):
                        current, kind, i = current * 100 + value, part_kind, j + 1
                        continue
                    break
            elif part_kind == _UNITS:
                if not (after_hundreds or kind == _TEN) or value == 0:
                    break
            current += value
            kind, i = part_kind, j + 1
        return total + current, i, kind

    def number(self, i: int) -> tuple[float, int] | None:
        """A whole number (integer, decimal or fraction) from token ``i``."""
        if self._is_digits(i):
            value = _digits_value(self.tokens[i].folded)
            nxt = i + 1
            if float(value).is_integer():
                decimal = self._decimal_after(nxt, int(value), _UNITS)
                if decimal is not None:
                    return decimal
            return value, nxt
        fraction = self._bare_fraction(i)
        if fraction is not None:
            return fraction
        read = self.integer(i)
        if read is None:
            return None
        value, nxt, kind = read
        decimal = self._decimal_after(nxt, value, kind)
        if decimal is not None:
            return decimal
        return float(value), nxt

    def _fraction_word(self, i: int) -> float | None:
        word = self._folded(i)
        if word in self.lex.halves:
            return 0.5
        if word in self.lex.quarters:
            return 0.25
        return None

    def _bare_fraction(self, i: int) -> tuple[float, int] | None:
        """"meio comprimido", "half a tablet", "um quarto de comprimido", "a quarter of a tablet"."""
        start = i
        if self._folded(i) in self.lex.ones and self._fraction_word(i + 1) == 0.25:
            i += 1
        fraction = self._fraction_word(i)
        if fraction is None or (fraction == 0.25 and i == start):
            return None
        j = i + 1
        while self._folded(j) in self.lex.fillers:
            j += 1
        if self._folded(j) not in QUANTITY_NOUNS:
            return None
        return fraction, i + 1

    def _decimal_after(self, i: int, value: int, kind: str) -> tuple[float, int] | None:
        if self._paused(i) or self._paused(i + 1):
            return None
        word = self._folded(i)
        if word in self.lex.points:
            digits, nxt = self._fraction_digits(i + 1)
            if digits is None:
                return None
            return float(f"{value}.{digits}"), nxt
        if word in self.lex.joiners:
            j = i + 1
            # "dois e meio", "two and a half", "doze e um quarto"
            if self._folded(j) in self.lex.ones and self._fraction_word(j + 1) is not None:
                j += 1
            fraction = self._fraction_word(j)
            if fraction is not None and (fraction == 0.5 or j > i + 1):
                return value + fraction, j + 1
            # "trinta e nove e quatro" = 39.4: a digit after a complete number of two figures.
            part = self._word(j)
            complete = kind == _TEEN or (kind in (_UNITS, _TEN_UNIT) and value % 100 >= 20)
            if part is not None and part[1] == _UNITS and 1 <= part[0] <= 9 and value >= 10 and complete:
                after = self._word(j + 1)
                if after is None or after[1] not in (_HUNDRED, _THOUSAND):
                    return float(f"{value}.{part[0]}"), j + 1
        return None

    def _fraction_digits(self, i: int) -> tuple[str | None, int]:
        """Digits after a decimal point: "dois" -> "2", "zero cinco" -> "05", "vinte e cinco" -> "25"."""
        if self._is_digits(i):
            return self.tokens[i].folded.replace(",", "").replace(".", ""), i + 1
        singles: list[str] = []
        j = i
        while True:
            part = self._word(j)
            if part is None or part[1] != _UNITS or (j > i and self._paused(j)):
                break
            singles.append(str(part[0]))
            j += 1
        if len(singles) >= 2:
            return "".join(singles), j
        read = self.integer(i)
        if read is None:
            return None, i
        value, nxt, _ = read
        return str(value), nxt


def find_numbers(text: str, language: str | None = None) -> list[SpokenNumber]:
    """Every number said in ``text``, in order, with its value and character span.

    ``language`` is ``"pt"``, ``"en"`` or ``"es"`` (a region suffix is ignored); any other reads
    only the words that are numbers in every supported language.
    """
    tokens = tokenize(text)
    reader = _Reader(tokens, _lexicon(language))
    found: list[SpokenNumber] = []
    i = 0
    while i < len(tokens):
        read = reader.number(i)
        if read is None:
            i += 1
            continue
        value, nxt = read
        start, end = tokens[i].start, tokens[nxt - 1].end
        found.append(SpokenNumber(value=value, start=start, end=end, text=text[start:end]))
        i = nxt
    return found


def parse_number(text: str, language: str | None = None) -> float | None:
    """The value of ``text`` when the whole text is one number, else ``None``.

    >>> parse_number("trinta e nove e quatro", "pt")
    39.4
    """
    tokens = tokenize(text)
    if not tokens:
        return None
    read = _Reader(tokens, _lexicon(language)).number(0)
    if read is None or read[1] != len(tokens):
        return None
    return read[0]


def to_digits(text: str, language: str | None = None) -> str:
    """``text`` with every spoken number replaced by its digits ("retorno em sete dias" ->
    "retorno em 7 dias"; decimals with a point)."""
    pieces: list[str] = []
    last = 0
    for number in find_numbers(text, language):
        pieces.append(text[last : number.start])
        pieces.append(format_number(number.value))
        last = number.end
    pieces.append(text[last:])
    return "".join(pieces)
