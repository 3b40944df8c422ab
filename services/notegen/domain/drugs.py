"""Drug names as said in pt, en and es, and the usual dose ranges the safety check compares with.

Two kinds of data live here:

* :data:`DRUGS`: common veterinary and human drugs, each under one canonical English key with the
  spellings clinicians use in the three languages, and, where known, the usual dose per
  administration: mg/kg for dogs, cats and rabbits, total mg for an adult human. Each range is
  the broad span across the usual indications (so an intentional high-end dose such as atropine
  for an organophosphate poisoning is not flagged) and the safety check adds a tolerance on top.
  Sources, by family: veterinary ranges follow Plumb's Veterinary Drug Handbook (dogs and cats),
  rabbits Carpenter's Exotic Animal Formulary, adult human doses the BNF / product labels
  (SmPC). They are a screening aid for typos and decimal slips, never a prescribing reference.
* Product words (:data:`PRODUCT_WORDS`) that name a medicine without being a drug ("vacina",
  "colírio", "pomada", "antibiótico") and drug-like name endings (:data:`DRUG_NAME_ENDINGS`) that
  let the extractor accept an unlisted drug said with a dose ("ciprofloxacino", "losartana").
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DRUGS",
    "DRUG_NAME_ENDINGS",
    "DoseRange",
    "Drug",
    "PRODUCT_WORDS",
    "SPECIES",
    "drug_by_name",
]

SPECIES: tuple[str, ...] = ("dog", "cat", "rabbit", "human")
"""Species the dose table knows, by canonical key."""


@dataclass(frozen=True)
class DoseRange:
    """Usual dose per administration: ``low``..``high`` in ``unit`` ("mg/kg" or "mg")."""

    low: float
    high: float
    unit: str = "mg/kg"
    min_interval_hours: float | None = None
    """Shortest usual interval between doses, where giving it more often is a known harm."""
    max_daily_mg: float | None = None
    """Usual maximum per day (adult human totals)."""


@dataclass(frozen=True)
class Drug:
    """One drug: canonical key, spellings (folded, lowercase, no accents), dose ranges by species
    and species it must not be given to, with the reason."""

    key: str
    names: tuple[str, ...]
    ranges: dict[str, DoseRange] = field(default_factory=dict)
    contraindicated: dict[str, str] = field(default_factory=dict)


def _d(key: str, names: str, ranges: dict[str, DoseRange] | None = None, **contra: str) -> Drug:
    return Drug(key=key, names=tuple(names.split("|")), ranges=ranges or {}, contraindicated=contra)


def _r(low: float, high: float, **kwargs: float) -> DoseRange:
    return DoseRange(low, high, **kwargs)  # type: ignore[arg-type]


def _h(low: float, high: float, **kwargs: float) -> DoseRange:
    return DoseRange(low, high, unit="mg", **kwargs)  # type: ignore[arg-type]


_RABBIT_ORAL_BETA_LACTAM = "oral use in rabbits risks a fatal enterotoxaemia"

DRUGS: tuple[Drug, ...] = (
    # --- antimicrobials -------------------------------------------------------------------
    _d("amoxicillin-clavulanate",
       "amoxicilina com clavulanato|amoxicilina + clavulanato|amoxicilina e clavulanato|"
       "amoxicilina con clavulanico|amoxicilina y clavulanico|amoxicillin with clavulanate|"
       "amoxicillin clavulanate|amoxicillin and clavulanate|amoxicillin + clavulanate|"
       "co amoxiclav|amoxiclav|clavamox|synulox",
       {"dog": _r(10, 25), "cat": _r(10, 25), "human": _h(375, 875)},
       rabbit=_RABBIT_ORAL_BETA_LACTAM),
    _d("amoxicillin", "amoxicilina|amoxicillin|amoxil",
       {"dog": _r(10, 25), "cat": _r(10, 25), "human": _h(250, 1000)},
       rabbit=_RABBIT_ORAL_BETA_LACTAM),
    _d("ampicillin", "ampicilina|ampicillin",
       {"dog": _r(10, 30), "cat": _r(10, 30)}, rabbit=_RABBIT_ORAL_BETA_LACTAM),
    _d("cephalexin", "cefalexina|cephalexin|cefalexin",
       {"dog": _r(15, 30), "cat": _r(15, 30), "human": _h(250, 1000)},
       rabbit=_RABBIT_ORAL_BETA_LACTAM),
    _d("clindamycin", "clindamicina|clindamycin",
       {"dog": _r(5, 25), "cat": _r(5, 25), "human": _h(150, 450)},
       rabbit="clindamycin causes a fatal enterotoxaemia in rabbits"),
    _d("metronidazole", "metronidazol|metronidazole",
       {"dog": _r(10, 25), "cat": _r(7.5, 25), "rabbit": _r(10, 40), "human": _h(200, 500)}),
    _d("enrofloxacin", "enrofloxacina|enrofloxacino|enrofloxacin|baytril",
       {"dog": _r(5, 20), "cat": _r(2.5, 5), "rabbit": _r(5, 20)}),
    _d("marbofloxacin", "marbofloxacina|marbofloxacino|marbofloxacin",
       {"dog": _r(2, 5.5), "cat": _r(2, 5.5)}),
    _d("ciprofloxacin", "ciprofloxacina|ciprofloxacino|ciprofloxacin",
       {"dog": _r(10, 25), "human": _h(250, 750)}),
    _d("doxycycline", "doxiciclina|doxycycline",
       {"dog": _r(5, 10), "cat": _r(5, 10), "rabbit": _r(2.5, 5), "human": _h(100, 200)}),
    _d("azithromycin", "azitromicina|azithromycin",
       {"dog": _r(5, 10), "cat": _r(5, 15), "human": _h(250, 500)}),
    _d("clarithromycin", "claritromicina|clarithromycin", {"human": _h(250, 500)}),
    _d("trimethoprim-sulfamethoxazole",
       "sulfametoxazol com trimetoprima|sulfametoxazol trimetoprima|trimethoprim sulfamethoxazole|"
       "sulfametoxazol con trimetoprima|co trimoxazole|bactrim",
       {"dog": _r(15, 30), "cat": _r(15, 30), "rabbit": _r(15, 30), "human": _h(480, 960)}),
    _d("gentamicin", "gentamicina|gentamicin"),
    _d("tobramycin", "tobramicina|tobramycin"),
    _d("chloramphenicol", "cloranfenicol|chloramphenicol"),
    _d("penicillin", "penicilina|penicillin"),
    # --- anti-inflammatories, analgesics --------------------------------------------------
    _d("meloxicam", "meloxicam|metacam|maxicam",
       {"dog": _r(0.1, 0.2, min_interval_hours=24), "cat": _r(0.05, 0.3, min_interval_hours=24),
        "rabbit": _r(0.2, 1.5, min_interval_hours=12), "human": _h(7.5, 15)}),
    _d("carprofen", "carprofeno|carprofen|rimadyl",
       {"dog": _r(2, 4.4, min_interval_hours=12), "cat": _r(1, 4), "rabbit": _r(1, 5)}),
    _d("firocoxib", "firocoxib|previcox", {"dog": _r(2.5, 5.5, min_interval_hours=24)}),
    _d("robenacoxib", "robenacoxib|onsior", {"dog": _r(1, 2), "cat": _r(1, 2.4)}),
    _d("dipyrone", "dipirona|metamizol|metamizole|dipyrone|novalgina",
       {"dog": _r(25, 50), "cat": _r(12.5, 25), "human": _h(500, 1000)}),
    _d("tramadol", "tramadol",
       {"dog": _r(1, 5), "cat": _r(0.5, 4), "rabbit": _r(4, 11), "human": _h(50, 100, max_daily_mg=400)}),
    _d("gabapentin", "gabapentina|gabapentin",
       {"dog": _r(2, 30), "cat": _r(2, 30), "rabbit": _r(2, 25), "human": _h(100, 1200)}),
    _d("buprenorphine", "buprenorfina|buprenorphine",
       {"dog": _r(0.005, 0.03), "cat": _r(0.01, 0.03), "rabbit": _r(0.01, 0.05)}),
    _d("paracetamol", "paracetamol|acetaminophen|acetaminofen|tylenol",
       {"dog": _r(10, 15), "human": _h(500, 1000, max_daily_mg=4000)},
       cat="paracetamol is toxic to cats at any dose"),
    _d("ibuprofen", "ibuprofeno|ibuprofen|advil",
       {"human": _h(200, 800, max_daily_mg=2400)},
       dog="ibuprofen has a narrow safety margin in dogs (gastric ulceration, kidney injury)",
       cat="ibuprofen is toxic to cats", rabbit="ibuprofen is not a rabbit analgesic"),
    _d("aspirin", "aspirina|aspirin|acido acetilsalicilico|acetylsalicylic acid"),
    _d("naproxen", "naproxeno|naproxen", {"human": _h(250, 500, max_daily_mg=1250)},
       dog="naproxen causes gastric ulceration and kidney injury in dogs",
       cat="naproxen is toxic to cats"),
    _d("oclacitinib", "oclacitinib|oclacitinibe|apoquel", {"dog": _r(0.4, 0.6, min_interval_hours=12)},
       cat="oclacitinib is not licensed for cats"),
    _d("prednisolone", "prednisolona|prednisolone",
       {"dog": _r(0.1, 2.2), "cat": _r(0.25, 4), "rabbit": _r(0.25, 2), "human": _h(5, 60)}),
    _d("prednisone", "prednisona|prednisone", {"dog": _r(0.1, 2.2), "human": _h(5, 60)}),
    _d("dexamethasone", "dexametasona|dexamethasone", {"dog": _r(0.02, 2), "cat": _r(0.02, 2)}),
    _d("betamethasone", "betametasona|betamethasone"),
    # --- gastrointestinal -----------------------------------------------------------------
    _d("omeprazole", "omeprazol|omeprazole",
       {"dog": _r(0.5, 2), "cat": _r(0.5, 1.5), "rabbit": _r(0.5, 2), "human": _h(10, 40)}),
    _d("maropitant", "maropitant|cerenia", {"dog": _r(1, 8), "cat": _r(0.5, 2)}),
    _d("ondansetron", "ondansetrona|ondansetron", {"dog": _r(0.1, 1), "cat": _r(0.1, 1), "human": _h(4, 8)}),
    _d("metoclopramide", "metoclopramida|metoclopramide",
       {"dog": _r(0.1, 0.5), "cat": _r(0.1, 0.5), "rabbit": _r(0.2, 1), "human": _h(5, 10)}),
    _d("ranitidine", "ranitidina|ranitidine", {"dog": _r(1, 2), "cat": _r(1, 3.5)}),
    _d("sucralfate", "sucralfato|sucralfate"),
    _d("simethicone", "simeticona|simethicone|dimeticona"),
    # --- cardiac, renal, metabolic --------------------------------------------------------
    _d("furosemide", "furosemida|furosemide|lasix",
       {"dog": _r(0.5, 6), "cat": _r(0.5, 4), "rabbit": _r(1, 4), "human": _h(20, 80)}),
    _d("pimobendan", "pimobendan|pimobendana|vetmedin", {"dog": _r(0.1, 0.3), "cat": _r(0.1, 0.3)}),
    _d("benazepril", "benazepril|fortekor", {"dog": _r(0.25, 1), "cat": _r(0.25, 1)}),
    _d("enalapril", "enalapril", {"dog": _r(0.25, 1), "cat": _r(0.25, 0.5), "human": _h(2.5, 20)}),
    _d("spironolactone", "espironolactona|spironolactone", {"dog": _r(1, 2), "cat": _r(1, 2)}),
    _d("amlodipine", "anlodipino|amlodipina|amlodipino|amlodipine",
       {"dog": _r(0.1, 0.5), "cat": _r(0.1, 0.5), "human": _h(2.5, 10)}),
    _d("atenolol", "atenolol", {"dog": _r(0.2, 2), "cat": _r(0.5, 2), "human": _h(25, 100)}),
    _d("atropine", "atropina|atropine",
       {"dog": _r(0.01, 0.5), "cat": _r(0.01, 0.5), "rabbit": _r(0.05, 0.5)}),
    _d("metformin", "metformina|metformin",
       {"human": _h(500, 1000, max_daily_mg=3000)}),
    _d("atorvastatin", "atorvastatina|atorvastatin", {"human": _h(10, 80)}),
    _d("simvastatin", "sinvastatina|simvastatina|simvastatin", {"human": _h(10, 80)}),
    _d("levothyroxine", "levotiroxina|levothyroxine", {"dog": _r(0.01, 0.022), "human": _h(0.025, 0.3)}),
    _d("insulin", "insulina|insulin"),
    _d("salbutamol", "salbutamol|albuterol"),
    _d("loratadine", "loratadina|loratadine", {"human": _h(10, 10)}),
    _d("cetirizine", "cetirizina|cetirizine", {"dog": _r(0.5, 1), "human": _h(5, 10)}),
    _d("clotrimazole", "clotrimazol|clotrimazole"),
    _d("ketoconazole", "cetoconazol|ketoconazol|ketoconazole", {"dog": _r(5, 10)}),
    _d("itraconazole", "itraconazol|itraconazole", {"dog": _r(5, 10), "cat": _r(5, 10)}),
    _d("lactated-ringer", "ringer lactato|ringer com lactato|lactated ringer|ringer lactate|ringer"),
    # --- parasite control -----------------------------------------------------------------
    _d("ivermectin", "ivermectina|ivermectin",
       {"dog": _r(0.006, 0.6), "cat": _r(0.024, 0.3), "rabbit": _r(0.2, 0.4)}),
    _d("milbemycin", "milbemicina|milbemicina oxima|milbemycin"),
    _d("praziquantel", "praziquantel|praziquantel", {"dog": _r(5, 25), "cat": _r(5, 25)}),
    _d("fenbendazole", "fenbendazol|fenbendazole", {"dog": _r(25, 50), "cat": _r(25, 50), "rabbit": _r(10, 20)}),
    _d("sarolaner", "sarolaner|simparic", {"dog": _r(2, 4), "cat": _r(1, 2.8)}),
    _d("fluralaner", "fluralaner|bravecto", {"dog": _r(25, 56), "cat": _r(40, 94)}),
    _d("afoxolaner", "afoxolaner|nexgard", {"dog": _r(2.5, 6.9)}),
    _d("selamectin", "selamectina|selamectin|revolution", {"dog": _r(6, 12), "cat": _r(6, 12)}),
    _d("fipronil", "fipronil|frontline", rabbit="fipronil is toxic to rabbits"),
    _d("permethrin", "permetrina|permethrin", cat="permethrin is toxic to cats"),
)
"""The drug table. ``names`` are folded (no accents, lowercase); multi-word names allowed."""

PRODUCT_WORDS: dict[str, str] = {
    # word (folded) -> route it implies, or "" when it implies none
    "vacina": "", "vacinas": "", "vacuna": "", "vacunas": "", "vaccine": "", "vaccines": "",
    "antirrabica": "", "quadrupla": "", "quintupla": "", "octupla": "", "v8": "", "v10": "",
    "colirio": "ophthalmic", "eye drops": "ophthalmic", "pomada": "", "ointment": "",
    "creme": "topical", "cream": "topical", "crema": "topical",
    "xarope": "oral", "syrup": "oral", "jarabe": "oral",
    "ceruminolitico": "otic", "otologica": "otic", "otologico": "otic",
    "antibiotico": "", "antibiotic": "", "antibiotics": "", "antibioticos": "",
    "vermifugo": "oral", "antipulgas": "", "antiparasitario": "",
    "papinha": "oral", "suplemento": "oral", "supplement": "oral",
}
"""Words that name a product or a class rather than a drug. Said with a dose or a route and no
drug name, they are the medication's name ("uns dois mililitros do ceruminolítico no ouvido")."""

DRUG_NAME_ENDINGS: tuple[str, ...] = (
    "cilina", "cillin", "micina", "mycin", "floxacina", "floxacino", "floxacin", "conazol",
    "conazole", "prazol", "prazole", "pril", "sartan", "sartana", "olol", "statina", "statin",
    "tidina", "tidine", "dipina", "dipine", "dipino", "semida", "semide", "coxib", "profeno",
    "profen", "xicam", "metasona", "methasone", "solona", "solone", "mectina", "mectin",
    "pentina", "pentin", "setrona", "setron", "pramida", "pramide", "zepam", "zolam", "idazol",
    "idazole", "ciclina", "cycline", "triptan", "gliptina", "gliptin", "formina", "formin",
    "laner", "parina", "parin",
)
"""Endings of international non-proprietary names: a word with one of them said with a dose is a
drug even when the table does not list it."""

_BY_NAME: dict[str, Drug] = {name: drug for drug in DRUGS for name in drug.names}


def drug_by_name(folded_name: str) -> Drug | None:
    """The table entry for a folded name ("metronidazol", "amoxicilina + clavulanato"), if any.

    A combination ("a + b") is found only when the table lists the combination itself: a cream
    of clotrimazole with gentamicin is not checked as if it were clotrimazole alone.
    """
    name = " ".join(folded_name.replace("+", " + ").split())
    if name in _BY_NAME:
        return _BY_NAME[name]
    parts = [p.strip() for p in name.split("+")]
    if len(parts) > 1:
        for joiner in (" com ", " with ", " con ", " + ", " e ", " and ", " y "):
            candidate = joiner.join(parts)
            if candidate in _BY_NAME:
                return _BY_NAME[candidate]
    return None
