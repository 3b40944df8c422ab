"""Lay words to clinical terms: the compact phrases a clinician would write for what was said.

The rules note generator copies sentences as they were said ("ela tá babando muito", "as pupilas
bem fechadinhas"). A clinician reading the note expects the usual terms as well ("salivação
excessiva", "miose"). This module holds, per language, general lay-to-clinical correspondences
of everyday clinical language (not phrases of any one consultation) and finds them in a
sentence. The generator writes each term found into a section beside the sentence it came from,
citing that sentence's segments, so every term can be checked against the words it stands for.

Each :class:`TermRule` says:

* ``pattern``: a regular expression over folded text (lowercase, no accents, clause breaks as
  ``|``; see ``generator._fold``). ``{gap}`` matches up to three words within a clause, ``{far}``
  up to ten words or clause breaks.
* ``term``: what the note says, in the consultation's language.
* ``kind``: ``symptom`` (what the patient or owner reports: chief complaint and history),
  ``sign`` (an examination finding: physical exam) or ``plan`` (a procedure or treatment
  decision: plan).
* ``needs``: optional extra condition on the same sentence (``drug``: a medicine is named in it).

A rule does not fire on a negated mention ("não tá babando", "no cough"): a negation word in the
three words before the match (within the clause) silences it, except for rules whose term is
itself a negative finding ("sem medicação"). When a question is answered "no" ("Desmaiou alguma
vez?" - "Não."), the generator asks for the question's terms negated (:func:`negated`), which
gives "sem síncope" / "no syncope" / "sin síncope".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "TERM_RULES",
    "VITAL_LABELS",
    "TermHit",
    "TermRule",
    "find_terms",
    "negated",
    "term_vocabulary",
    "vital_phrase",
]

KINDS: dict[str, tuple[str, ...]] = {
    "symptom": ("chief_complaint", "anamnesis"),
    "sign": ("physical_exam",),
    "plan": ("plan",),
}
"""Sections a term of each kind may go to."""

_MACROS = {
    "{gap}": r"(?:\s+[^\s|]+){0,3}?",
    "{far}": r"(?:\s+(?:[^\s|]+|\|)){0,10}?",
}

_NEGATIONS: dict[str, str] = {
    "pt": r"(?:nao|sem|nem|nunca|nenhum|nenhuma|jamais)",
    "en": r"(?:no|not|without|never|none|nothing|n t|don t|didn t|doesn t|isn t|aren t|wasn t)",
    "es": r"(?:no|sin|ni|nunca|ningun|ninguna|jamas)",
}


@dataclass(frozen=True)
class TermRule:
    pattern: str
    term: str
    kind: str
    needs: str | None = None
    negative: bool = False


def _r(pattern: str, term: str, kind: str, needs: str | None = None, negative: bool = False) -> TermRule:
    return TermRule(pattern, term, kind, needs, negative)


# Recurring pieces, written over folded text.
_PT_EAT = r"(?:come|comendo|comeu|comer|comida)"
_PT_PEE = r"(?:xixi|urina\w*|mijando|mija|caixa de areia|caixinha)"
_ES_EAT = r"(?:come|comiendo|comio|comer)"
_EN_EAT = r"(?:eat|eats|eating|ate)"

TERM_RULES: dict[str, tuple[TermRule, ...]] = {
    "pt": (
        # Symptoms the owner or patient reports.
        _r(r"\b(?:bafo|halito (?:ruim|forte|horrivel|pesado)|cheiro ruim na boca|boca (?:fedendo|fedida))\b", "mau hálito", "symptom"),
        _r(r"\b(?:cheir\w* (?:ruim|forte|azedo|horrivel|estranho)|fedendo|fedor|fedido|fedida|catinga)\b", "mau odor", "symptom"),
        _r(r"\b(?:babando|baba|babou|babar|salivando)\b(?:\s+(?:\w+\s+)?(?:muito|demais|bastante|sem parar))", "salivação excessiva", "symptom"),
        _r(r"\b(?:babando|baba|babou|babar|salivando)\b", "salivação", "symptom"),
        _r(r"\b(?:(?:ele|ela|eu) (?:caiu|cai|cair)|caiu (?:no|na|la|da|do|de)|levou um tombo|tombou)\b", "queda", "symptom"),
        _r(r"\b(?:parou de comer|(?<!quase )nao (?:quer |esta |ta )?(?:come|comendo|comer)(?: nada)?(?=\s*(?:\||$|desde|faz|ha|mais|direito|de jeito))|recusa a comida)\b", "anorexia", "symptom"),
        _r(rf"\b(?:{_PT_EAT} (?:bem |muito )?(?:pouco|pouquinho|menos|mal)|{_PT_EAT} \| mas menos|quase nao (?:come|comendo|quer comer)|perdeu o apetite|sem apetite|apetite (?:menor|diminuiu|caiu))\b", "apetite reduzido", "symptom"),
        _r(rf"\b(?:{_PT_EAT}{{far}} mais (?:do )?que antes|{_PT_EAT} (?:bem )?mais\b|mais fome|fome demais|apetite (?:maior|aumentou))\b", "apetite aumentado", "symptom"),
        _r(r"\b(?:beb\w* (?:muita )?agua (?:demais|toda hora|o dia (?:todo|inteiro))|beb\w* muita agua|agua demais)\b", "polidipsia", "symptom"),
        _r(rf"\b(?:{_PT_EAT} (?:devagar|de um lado so)|mastiga{{gap}} (?:devagar|de um lado))\b", "dificuldade de mastigação", "symptom"),
        _r(rf"\b{_PT_PEE}{{far}} (?:toda hora|o dia (?:todo|inteiro)|(?:muitas|varias) vezes)\b", "micção frequente", "symptom"),
        _r(r"\b(?:muito xixi|xixi demais|urinando muito|urina muito|urinar muito|mijando muito)\b", "poliúria", "symptom"),
        _r(r"\b(?:(?:pinguinho|pouquinho|gotinha|gotinhas|pouco) de (?:xixi|urina)|sai (?:so )?(?:um )?(?:pinguinho|pouquinho))\b", "pouca urina", "symptom"),
        _r(r"\b(?:(?:xixi|urina)\w*{gap} (?:com sangue|rosad\w*|vermelh\w*|avermelhad\w*)|sangue no xixi|sangue na urina)\b", "hematúria", "symptom"),
        _r(r"\b(?:coco|fezes)\w*{gap} (?:mole|molinho|pastos\w*|liquid\w*|aguad\w*)\b", "diarreia", "symptom"),
        _r(r"\b(?:emagreceu|emagrecendo|emagreceram|perdeu peso|perdendo peso|costel\w*{gap} aparecendo)\b", "emagrecimento", "symptom"),
        _r(r"\b(?:mancando|manca|manqueira|nao (?:apoia|pisa) (?:a|com a) (?:pata|perna))\b", "claudicação", "symptom"),
        _r(r"\b(?:quietinho|quietinha|quieto|quieta|desanimad\w*|abatid\w*|prostrad\w*|apatic\w*|sem energia|molinho|molinha|jururu)\b", "apatia", "symptom"),
        _r(r"\b(?:respira\w*{gap} (?:rapid\w*|acelerad\w*|ofegante)|(?:barriga|barriguinha) sobe e desce{gap} rapido|ofegante)\b", "taquipneia", "symptom"),
        _r(r"\b(?:falta de ar|cansad\w* pra respirar|dificuldade (?:pra|para|de) respirar)\b", "dispneia", "symptom"),
        _r(r"\b(?:desmai\w*|apagou)\b", "síncope", "symptom"),
        _r(r"\b(?:(?:barriga|barriguinha) (?:inchada|estufada|grande|dura))\b", "distensão abdominal", "symptom"),
        _r(r"\b(?:dor|doendo|doi) (?:na|de) (?:barriga|barriguinha)\b", "dor abdominal", "symptom"),
        _r(r"\b(?:se coca|cocando|coca (?:muito|demais|toda hora)|coceira)\b", "coceira", "symptom"),
        _r(r"\b(?:(?:ta|esta|anda) cansando|cansa (?:mais|rapido|facil)|cansad\w* (?:nos|no|pra|para) (?:passeio|passeios|andar|correr))\b", "intolerância ao exercício", "symptom"),
        _r(r"\b(?:engasg\w*|tosse{gap} pra fora)\b", "engasgo", "symptom"),
        # Examination findings, said by the clinician.
        _r(r"\bpupila\w*{gap} (?:fechad\w*|fechadinh\w*|contraid\w*|pequen\w*|puntiforme\w*)", "miose", "sign"),
        _r(r"\bpupila\w*{gap} (?:dilatad\w*|muito abertas|arregalad\w*)", "midríase", "sign"),
        _r(r"\b(?:coracao|cardiac\w*|batimentos|pulso){far} (?:baix[oa]|lent[oa])\b", "bradicardia", "sign"),
        _r(r"\b(?:coracao|cardiac\w*|batimentos|pulso){far} (?:acelerad[oa]|disparad[oa]|rapid[oa])\b", "taquicardia", "sign"),
        _r(r"\btemperatura{far} (?:alt[ao]|elevad[ao])\b", "hipertermia", "sign"),
        _r(r"\btemperatura{far} baix[ao]\b", "hipotermia", "sign"),
        _r(r"\b(?:(?:nao|quase nao|pouco|mal) (?:escuto|ouco|sinto)|sem|pouc\w*|diminuid\w*|reduzid\w*) (?:o |os )?(?:barulho|som|sons|ruido|ruidos|movimento)\w* (?:do|no|de|dos) intestin\w*", "motilidade intestinal reduzida", "sign"),
        _r(r"\b(?:pele (?:volta|voltando|demora){gap} (?:devagar|lent\w*)|turgor{gap} (?:diminuid\w*|reduzid\w*))\b", "turgor cutâneo reduzido", "sign"),
        _r(r"\bgengiva\w*{gap} (?:vermelh\w*|inflamad\w*|sangrando)", "gengivite", "sign"),
        _r(r"\b(?:linfonodo\w*|ganglio\w*|ingua\w*){gap} (?:aumentad\w*|inchad\w*|grande\w*)", "linfadenomegalia", "sign"),
        _r(r"\b(?:(?:reflexo\w*|forca|sensibilidade)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+(?:reflexo\w*|forca|sensibilidade)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+normais)\b", "exame neurológico normal", "sign"),
        # Procedures and treatment decisions.
        _r(r"\b(?:pegar (?:a |uma )?veia|acesso (?:na )?veia|pegar (?:um )?acesso|cateter na veia)\b", "acesso venoso", "plan"),
        _r(r"\b(?:soro (?:na veia|embaixo da pele|debaixo da pele|subcutaneo|intravenoso|endovenoso)|(?:ligar|fazer|aplicar|colocar|dar) (?:o |um )?soro)\b", "fluidoterapia", "plan"),
        _r(r"\b(?:pra|para|contra) (?:a )?dor\b", "analgesia", "plan", needs="drug"),
        _r(r"\b(?:(?:papinha|comida|alimento|racao|pate|pastinha){far} seringa|seringa{far} (?:papinha|comida|alimento|racao|pate))\b", "alimentação assistida", "plan"),
        _r(r"\b(?:nao vou (?:passar|receitar|prescrever|dar) (?:nenhum |nada de )?(?:remedio|medicacao|medicamento)|(?:remedio|medicacao|medicamento) nenhum|nao precisa (?:de )?(?:remedio|medicacao|medicamento))\b", "sem medicação", "plan", negative=True),
        _r(r"\b(?:(?:olhar|olhei|olho|ver|vi|vejo) no microscopio)\b", "citologia", "plan"),
    ),
    "en": (
        _r(r"\b(?:low (?:blood )?sugar|hypo)\b", "hypoglycemia", "symptom"),
        _r(r"\b(?:threw up|throwing up|been sick)\b", "vomiting", "symptom"),
        _r(r"\brunny nose\b", "rhinorrhea", "symptom"),
        _r(r"\b(?:short of breath|out of breath|breathless|can t catch (?:my|his|her) breath)\b", "dyspnea", "symptom"),
        _r(r"\b(?:ache all over|aching all over|aches all over)\b", "myalgia", "symptom"),
        _r(r"\b(?:fainted|passed out|blacked out)\b", "syncope", "symptom"),
        _r(r"\b(?:pins and needles|tingling)\b", "paresthesia", "symptom"),
        _r(r"\b(?:(?:peeing|pee|urinating) (?:a lot|all the time|more)|up at night to pee)\b", "urinary frequency", "symptom"),
        _r(r"\b(?:thirsty all the time|drinking (?:a lot|loads|more))\b", "polydipsia", "symptom"),
        _r(r"\b(?:(?:lost|losing) weight)\b", "weight loss", "symptom"),
        _r(rf"\b(?:(?:will not|won t|not|stopped|refuses to|refusing to) {_EN_EAT}(?: anything)?(?=\s*(?:\||$|since|for|at all))|refusing food)\b", "loss of appetite", "symptom"),
        _r(rf"\b(?:off (?:my|his|her) food|not {_EN_EAT} much|{_EN_EAT} (?:less|very little))\b", "reduced appetite", "symptom"),
        _r(r"\b(?:tummy|stomach) (?:ache|pain)\b", "abdominal pain", "symptom"),
        _r(r"\b(?:hurts|painful|pain) (?:to|when I|when you|on) swallow\w*\b", "odynophagia", "symptom"),
        _r(r"\bpupils{gap} (?:small|pinpoint|constricted)\b", "miosis", "sign"),
        _r(r"\bpupils{gap} (?:dilated|large|big)\b", "mydriasis", "sign"),
        _r(r"\b(?:heart rate|pulse){far} (?:low|slow)\b", "bradycardia", "sign"),
        _r(r"\b(?:heart rate|pulse){far} (?:high|fast|racing)\b", "tachycardia", "sign"),
        _r(r"\b(?:lymph nodes|nodes|glands){gap} (?:enlarged|swollen|up)\b", "lymphadenopathy", "sign"),
        _r(r"\b(?:strength|reflexes|sensation)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+(?:strength|reflexes|sensation)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+(?:are |is )?normal\b", "normal neurological exam", "sign"),
        _r(r"\b(?:(?:no|absent|reduced|quiet) bowel sounds)\b", "reduced gut motility", "sign"),
        _r(r"\b(?:for (?:the )?pain|painkiller\w*|pain relief)\b", "analgesia", "plan", needs="drug"),
        _r(r"\b(?:put (?:up )?(?:a |an )?(?:drip|line|iv)|iv fluids|fluids into the vein)\b", "intravenous fluids", "plan"),
        _r(r"\b(?:(?:no|don t need (?:any )?|won t need (?:any )?)(?:medication|medicine|antibiotics) (?:needed|today|for now)?)", "no medication", "plan", negative=True),
    ),
    "es": (
        _r(r"\b(?:mal aliento|le huele (?:mal )?la boca|aliento (?:fuerte|feo))\b", "halitosis", "symptom"),
        _r(r"\b(?:huele (?:mal|feo|raro)|mal olor|olor (?:feo|fuerte|raro))\b", "mal olor", "symptom"),
        _r(r"\b(?:babea|babeando|babeo|baba)\b(?:\s+(?:\w+\s+)?(?:mucho|muchisimo|sin parar))", "salivación excesiva", "symptom"),
        _r(r"\b(?:babea|babeando|babeo|baba)\b", "salivación", "symptom"),
        _r(r"\b(?:se (?:ha )?cayo|se (?:ha )?caido|se cae)\b", "caída", "symptom"),
        _r(rf"\b(?:(?:dejo|ha dejado) de comer|(?<!casi )no (?:quiere )?{_ES_EAT}(?: nada)?(?=\s*(?:\||$|desde|hace|mas|bien)))\b", "anorexia", "symptom"),
        _r(rf"\b(?:{_ES_EAT} (?:muy )?(?:poco|menos)|{_ES_EAT} \| pero menos|casi no (?:come|quiere comer)|sin apetito|perdio el apetito)\b", "apetito reducido", "symptom"),
        _r(rf"\b(?:{_ES_EAT} (?:mucho )?mas(?: que antes)?|mas hambre)\b", "apetito aumentado", "symptom"),
        _r(r"\b(?:bebe (?:mucha agua|muchisimo|mucho)|toma mucha agua)\b", "polidipsia", "symptom"),
        _r(r"\b(?:(?:orina|hace pis|pis)\w*{gap} (?:todo el rato|a cada rato|muchas veces|mucho))\b", "micción frecuente", "symptom"),
        _r(r"\b(?:(?:orina|pis)\w*{gap} (?:con sangre|rojiz\w*|roja|rosad\w*)|sangre en la orina)\b", "hematuria", "symptom"),
        _r(r"\b(?:adelgazo|ha adelgazado|adelgazando|perdio peso|ha perdido peso|se le (?:ven|notan) las costillas)\b", "pérdida de peso", "symptom"),
        _r(r"\b(?:lagan\w*|legan\w*)\b", "secreción ocular", "symptom"),
        _r(r"\b(?:ojos? llorosos?|le lloran los ojos|lagrimea\w*)\b", "epífora", "symptom"),
        _r(r"\b(?:decaid\w*|apagad\w*|sin ganas|desanimad\w*|triste)\b", "apatía", "symptom"),
        _r(r"\b(?:le pica|se rasca|rascandose|picor)\b", "prurito", "symptom"),
        _r(r"\b(?:se desmayo|desmay\w*)\b", "síncope", "symptom"),
        _r(r"\bpupilas{gap} (?:cerrad\w*|contraid\w*|pequen\w*|puntiforme\w*)", "miosis", "sign"),
        _r(r"\bpupilas{gap} (?:dilatad\w*)", "midriasis", "sign"),
        _r(r"\b(?:corazon|cardiac\w*|latidos|pulso){far} (?:baj[oa]|lent[oa])\b", "bradicardia", "sign"),
        _r(r"\b(?:corazon|cardiac\w*|latidos|pulso){far} (?:acelerad[oa]|rapid[oa])\b", "taquicardia", "sign"),
        _r(r"\btemperatura{far} (?:alt[ao]|elevad[ao])\b", "hipertermia", "sign"),
        _r(r"\btemperatura{far} baj[ao]\b", "hipotermia", "sign"),
        _r(r"\b(?:(?:no|casi no|apenas) (?:oigo|escucho) (?:los )?(?:ruidos|movimientos)\w* (?:intestinales|del intestino))", "motilidad intestinal reducida", "sign"),
        _r(r"\b(?:ganglio\w*){gap} (?:aumentad\w*|inflamad\w*|grande\w*)", "linfadenomegalia", "sign"),
        _r(r"\b(?:fuerza|reflejos|sensibilidad)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+(?:fuerza|reflejos|sensibilidad)\b(?:\s+(?:[^\s|]+|\|)){0,6}?\s+(?:son |estan )?normales\b", "examen neurológico normal", "sign"),
        _r(r"\b(?:(?:coger|cogerle|poner|ponerle) (?:una )?via|via (?:venosa|intravenosa))\b", "acceso venoso", "plan"),
        _r(r"\b(?:suero (?:en la vena|intravenoso|subcutaneo|debajo de la piel)|(?:poner|ponerle|ponemos) (?:el |un )?suero|gotero)\b", "fluidoterapia", "plan"),
        _r(r"\b(?:para (?:el )?dolor|analgesic\w*)\b", "analgesia", "plan", needs="drug"),
        _r(r"\b(?:no le voy a (?:dar|recetar|poner) (?:nada|ningun \w+)|no necesita (?:medicacion|medicamentos|tratamiento))\b", "sin medicación", "plan", negative=True),
        _r(r"\b(?:(?:operar\w*|operacion|cirugia)\b)", "cirugía", "plan"),
    ),
}
"""Lay expressions and the clinical term each stands for, per language."""

VITAL_LABELS: dict[str, dict[str, str]] = {
    "pt": {
        "weight_kg": "peso {} kg",
        "temperature_c": "temperatura {} °C",
        "heart_rate_bpm": "frequência cardíaca {} bpm",
        "respiratory_rate_rpm": "frequência respiratória {} mpm",
    },
    "en": {
        "weight_kg": "weight {} kg",
        "temperature_c": "temperature {} °C",
        "heart_rate_bpm": "heart rate {} bpm",
        "respiratory_rate_rpm": "respiratory rate {}/min",
    },
    "es": {
        "weight_kg": "peso {} kg",
        "temperature_c": "temperatura {} °C",
        "heart_rate_bpm": "frecuencia cardíaca {} lpm",
        "respiratory_rate_rpm": "frecuencia respiratoria {} rpm",
    },
}
"""How the examination writes the vital signs read from the transcript (final values said)."""

DECIMAL_COMMA = frozenset({"pt", "es"})

NEGATED_FORMS: dict[str, str] = {"pt": "sem {}", "en": "no {}", "es": "sin {}"}
"""How a term answered "no" is written."""

_HEDGES: dict[str, str] = {
    "pt": r"\b(?:pode|talvez|possivel\w*|provavel\w*|muitas vezes|se precisar|a gente decide|decidimos)\b",
    "en": r"\b(?:may|might|maybe|possibl\w*|probabl\w*|if needed|we ll decide|depending)\b",
    "es": r"\b(?:puede|quizas|tal vez|posible\w*|probable\w*|muchas veces|lo decidimos|si hace falta)\b",
}
_POSSIBLE: dict[str, str] = {"pt": "possível {}", "en": "possible {}", "es": "posible {}"}


@dataclass(frozen=True)
class TermHit:
    """One term found in a sentence: ``start``/``end`` are offsets in the folded text."""

    term: str
    kind: str
    start: int
    end: int
    negative: bool = False


@functools.lru_cache(maxsize=8)
def _compiled(language: str) -> tuple[tuple[TermRule, re.Pattern[str]], ...]:
    rules = TERM_RULES.get(language, ())
    compiled: list[tuple[TermRule, re.Pattern[str]]] = []
    for rule in rules:
        pattern = rule.pattern
        for macro, body in _MACROS.items():
            pattern = pattern.replace(macro, body)
        compiled.append((rule, re.compile(pattern)))
    return tuple(compiled)


@functools.lru_cache(maxsize=8)
def _negation_before(language: str) -> re.Pattern[str]:
    words = _NEGATIONS.get(language) or "(?:" + "|".join(_NEGATIONS.values()) + ")"
    return re.compile(r"(?:^|\s)" + words + r"(?:\s+[^\s|]+){0,2}\s*$")


def find_terms(folded: str, language: str, *, drug: bool = False) -> list[TermHit]:
    """The clinical terms for what ``folded`` (text folded as ``generator._fold`` does) says.

    ``drug`` says whether a medicine is named in the sentence (some rules need one). A negated
    mention gives nothing; overlapping rules keep the first listed (the more specific one).
    """
    hits: list[TermHit] = []
    taken: list[tuple[int, int]] = []
    seen: set[str] = set()
    for rule, regex in _compiled(language):
        if rule.needs == "drug" and not drug:
            continue
        for match in regex.finditer(folded):
            start, end = match.start(), match.end()
            if any(start < b and a < end for a, b in taken) or rule.term in seen:
                continue
            before = folded[:start].rsplit("|", 1)[-1]
            if not rule.negative and _negation_before(language).search(before):
                continue
            term = rule.term
            if rule.kind == "plan" and not rule.negative and re.search(_HEDGES.get(language, "$^"), folded):
                term = _POSSIBLE[language].format(term)
            taken.append((start, end))
            seen.add(rule.term)
            hits.append(TermHit(term, rule.kind, start, end, rule.negative))
            break
    return sorted(hits, key=lambda h: h.start)


def vital_phrase(name: str, value: float, language: str) -> str:
    """A vital sign as the examination writes it: "temperatura 39,4 °C", "heart rate 96 bpm"."""
    text = f"{value:.6f}".rstrip("0").rstrip(".") if not float(value).is_integer() else str(int(value))
    if language in DECIMAL_COMMA:
        text = text.replace(".", ",")
    return VITAL_LABELS.get(language, VITAL_LABELS["en"])[name].format(text)


def negated(term: str, language: str) -> str:
    """``term`` as a denied finding: "sem síncope", "no syncope", "sin síncope"."""
    return NEGATED_FORMS.get(language, "no {}").format(term)


def term_vocabulary(language: str) -> frozenset[str]:
    """Every word the term tables may write for ``language`` (lowercase), for checks that a
    note's words were said or come from these tables."""
    words: set[str] = set()
    templates = [NEGATED_FORMS.get(language, ""), _POSSIBLE.get(language, "")]
    templates.extend(VITAL_LABELS.get(language, VITAL_LABELS["en"]).values())
    for rule in TERM_RULES.get(language, ()):
        words.update(re.findall(r"\w+", rule.term.casefold()))
    for template in templates:
        words.update(re.findall(r"\w+", template.casefold()))
    return frozenset(words)
