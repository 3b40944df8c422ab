"""Typed clinical facts a note carries beside its prose, each traceable to what was said.

Every value here was extracted from the transcript (see ``extraction.py``) and carries the
indices of the transcript segments it came from and their time range, so a reader can jump to
the words. Nothing is inferred beyond normalising what was said: spoken numbers become numbers,
"uma vez por dia" becomes an interval of 24 hours, "pela boca" the route ``oral``.

All types are plain dataclasses with ``to_dict()`` giving JSON-ready dicts;
``StructuredData.from_dict`` reads such a dict back, for storage. The codes used in values:

* ``Medication.unit``: ``mg``, ``mcg``, ``g``, ``ml``, ``IU``, ``drop``, ``tablet``, ``capsule``,
  ``dose``, ``puff``, optionally followed by ``/kg`` and then ``/h`` or ``/day``
  ("cinco mililitros por quilo por hora" -> ``ml/kg/h``).
* ``Medication.route``: ``oral``, ``subcutaneous``, ``intravenous``, ``intramuscular``,
  ``otic``, ``ophthalmic``, ``topical``, ``inhaled``, ``rectal``, ``intranasal``; several joined
  with ``+`` in the order said ("um quarto na veia e o resto embaixo da pele" ->
  ``intravenous+subcutaneous``).
* ``Patient.species``: ``dog``, ``cat``, ``rabbit``, ``human`` ...; ``Patient.sex``: ``male`` or
  ``female``; ``Patient.age``: a number with unit ``years``, ``months`` or ``weeks``.
* ``Diagnosis.status``: ``stated`` or ``suspected``.
* ``SafetyFlag.severity``: ``high`` (likely a tenfold / decimal error or a contraindication) or
  ``warning``; ``SafetyFlag.code``: see ``safety.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Diagnosis",
    "Fact",
    "Medication",
    "Patient",
    "SafetyFlag",
    "Sentence",
    "StructuredData",
    "Vitals",
]


def _segments(value: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in (value or ()))


@dataclass(frozen=True)
class Sentence:
    """One sentence of a section and where it was said: segment indices and their time range."""

    text: str
    source_segments: tuple[int, ...]
    start_ms: int
    end_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "source_segments": list(self.source_segments),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sentence:
        return cls(
            text=str(data["text"]),
            source_segments=_segments(data.get("source_segments")),
            start_ms=int(data.get("start_ms", 0)),
            end_ms=int(data.get("end_ms", 0)),
        )


@dataclass(frozen=True)
class Fact:
    """One value said in the consultation.

    ``value`` is a number (``30.5``) or a string (a name, a species code); ``unit`` its unit or
    ``None``; ``text`` the words as said ("trinta vírgula cinco quilos"); ``source_segments`` the
    transcript segments holding those words and ``start_ms``/``end_ms`` their time range.
    """

    value: float | str
    unit: str | None
    source_segments: tuple[int, ...]
    start_ms: int
    end_ms: int
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "text": self.text,
            "source_segments": list(self.source_segments),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Fact | None:
        if data is None:
            return None
        value = data["value"]
        return cls(
            value=value if isinstance(value, str) else float(value),
            unit=data.get("unit"),
            source_segments=_segments(data.get("source_segments")),
            start_ms=int(data.get("start_ms", 0)),
            end_ms=int(data.get("end_ms", 0)),
            text=str(data.get("text", "")),
        )


def _fact_dict(fact: Fact | None) -> dict[str, Any] | None:
    return None if fact is None else fact.to_dict()


@dataclass(frozen=True)
class Patient:
    """Who was seen: each field a :class:`Fact` with a string value (``age``: a number), or
    ``None`` when the consultation did not say it."""

    name: Fact | None = None
    species: Fact | None = None
    breed: Fact | None = None
    sex: Fact | None = None
    age: Fact | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": _fact_dict(self.name),
            "species": _fact_dict(self.species),
            "breed": _fact_dict(self.breed),
            "sex": _fact_dict(self.sex),
            "age": _fact_dict(self.age),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Patient:
        data = data or {}
        return cls(**{k: Fact.from_dict(data.get(k)) for k in ("name", "species", "breed", "sex", "age")})


@dataclass(frozen=True)
class Vitals:
    """Measurements taken in the consultation, each the final value said (a correction wins)."""

    weight_kg: Fact | None = None
    temperature_c: Fact | None = None
    heart_rate_bpm: Fact | None = None
    respiratory_rate_rpm: Fact | None = None

    FIELDS = ("weight_kg", "temperature_c", "heart_rate_bpm", "respiratory_rate_rpm")

    def to_dict(self) -> dict[str, Any]:
        return {name: _fact_dict(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Vitals:
        data = data or {}
        return cls(**{name: Fact.from_dict(data.get(name)) for name in cls.FIELDS})


@dataclass(frozen=True)
class Medication:
    """A medicine given or prescribed in the visit.

    ``name`` as said ("metronidazol", "clotrimazol + gentamicina + betametasona"); ``drug`` the
    canonical key of the dose table when known ("metronidazole"); ``dose`` and ``unit`` the amount
    per administration (see the module docstring for unit codes); ``route`` a route code;
    ``frequency`` the words said for how often ("a cada doze horas"), ``interval_hours`` their
    value (24 for "uma vez por dia"), ``as_needed`` for "se necessário" / "when you need it",
    ``continuous`` for an infusion rate; ``duration_days`` the stated course, ``None`` for single
    doses and open-ended use; ``total_dose`` a total also said beside a per-kg dose ("um
    miligrama por quilo, ou seja, trinta miligramas"), in the dose's base unit, for the
    consistency check. ``text`` is the span of speech the medication was read from.
    """

    name: str
    dose: float | None
    unit: str | None
    route: str | None
    frequency: str | None
    duration_days: float | None
    source_segments: tuple[int, ...]
    start_ms: int
    end_ms: int
    interval_hours: float | None = None
    as_needed: bool = False
    continuous: bool = False
    drug: str | None = None
    total_dose: float | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "drug": self.drug,
            "dose": self.dose,
            "unit": self.unit,
            "total_dose": self.total_dose,
            "route": self.route,
            "frequency": self.frequency,
            "interval_hours": self.interval_hours,
            "as_needed": self.as_needed,
            "continuous": self.continuous,
            "duration_days": self.duration_days,
            "text": self.text,
            "source_segments": list(self.source_segments),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Medication:
        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            name=str(data["name"]),
            dose=num("dose"),
            unit=data.get("unit"),
            route=data.get("route"),
            frequency=data.get("frequency"),
            duration_days=num("duration_days"),
            source_segments=_segments(data.get("source_segments")),
            start_ms=int(data.get("start_ms", 0)),
            end_ms=int(data.get("end_ms", 0)),
            interval_hours=num("interval_hours"),
            as_needed=bool(data.get("as_needed", False)),
            continuous=bool(data.get("continuous", False)),
            drug=data.get("drug"),
            total_dose=num("total_dose"),
            text=str(data.get("text", "")),
        )


@dataclass(frozen=True)
class Diagnosis:
    """A diagnosis as the clinician worded it; ``status`` is ``"stated"`` or ``"suspected"``."""

    text: str
    status: str
    source_segments: tuple[int, ...]
    start_ms: int
    end_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "status": self.status,
            "source_segments": list(self.source_segments),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(
            text=str(data["text"]),
            status=str(data.get("status", "stated")),
            source_segments=_segments(data.get("source_segments")),
            start_ms=int(data.get("start_ms", 0)),
            end_ms=int(data.get("end_ms", 0)),
        )


@dataclass(frozen=True)
class SafetyFlag:
    """Something about a dose a clinician should look at before signing; never auto-corrected.

    ``code`` says what (see ``safety.py``), ``severity`` how sure (``high`` or ``warning``),
    ``message`` why, in the consultation's language, ``medication`` which one (its name as said);
    the provenance is that of the medication's words.
    """

    code: str
    severity: str
    message: str
    medication: str | None
    source_segments: tuple[int, ...]
    start_ms: int
    end_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "medication": self.medication,
            "source_segments": list(self.source_segments),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SafetyFlag:
        return cls(
            code=str(data["code"]),
            severity=str(data.get("severity", "warning")),
            message=str(data.get("message", "")),
            medication=data.get("medication"),
            source_segments=_segments(data.get("source_segments")),
            start_ms=int(data.get("start_ms", 0)),
            end_ms=int(data.get("end_ms", 0)),
        )


@dataclass
class StructuredData:
    """Everything structured about one consultation; empty when nothing was said."""

    patient: Patient = field(default_factory=Patient)
    vitals: Vitals = field(default_factory=Vitals)
    medications: list[Medication] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    follow_up_days: Fact | None = None
    flags: list[SafetyFlag] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient": self.patient.to_dict(),
            "vitals": self.vitals.to_dict(),
            "medications": [m.to_dict() for m in self.medications],
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "follow_up_days": _fact_dict(self.follow_up_days),
            "flags": [f.to_dict() for f in self.flags],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StructuredData:
        data = data or {}
        return cls(
            patient=Patient.from_dict(data.get("patient")),
            vitals=Vitals.from_dict(data.get("vitals")),
            medications=[Medication.from_dict(m) for m in data.get("medications") or ()],
            diagnoses=[Diagnosis.from_dict(d) for d in data.get("diagnoses") or ()],
            follow_up_days=Fact.from_dict(data.get("follow_up_days")),
            flags=[SafetyFlag.from_dict(f) for f in data.get("flags") or ()],
        )
