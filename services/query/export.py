"""Render a clinical note as a downloadable document: plain text (TXT) or Rich Text (RTF).

This module is the pure part of ``GET /notes/v1/notes/{id}/export?format=txt|rtf``: it takes a
:class:`NoteDocument` (already read from the read model by the caller) and returns bytes, a
``Content-Type`` and a file name. It performs no I/O and logs nothing, since everything it handles
is clinical content.

Both formats carry the same content, in this order:

1. a heading with the localised document title ("Nota clínica", "Clinical note", ...);
2. labelled lines for the patient's name, gender, external id and the creation date
   (``YYYY-MM-DD HH:MM UTC``), followed by the note's metadata as ``key: value`` lines;
3. every section with non-empty content, by ascending ``order``: its title as a heading, then its
   content (paragraphs, tabs, bullets and any Unicode are preserved).

Empty fields and sections whose content is blank are left out. Labels follow the note's language
(``pt``, ``en``, ``es``; a tag such as ``pt-BR`` is read as ``pt``); any other language, or none,
gets English labels.

TXT is UTF-8 without a BOM, ``\\n`` line endings, the document title underlined with ``=`` and
section titles with ``-``, one blank line between blocks, and exactly one final newline.

RTF is 7-bit ASCII only, so it survives any transport and opens the same in Word, LibreOffice and
WordPad. Its stylesheet defines Normal (``\\s0``), Heading 1 (``\\s1``, the document title) and
Heading 2 (``\\s2``, section titles) with outline levels, so word processors list the sections in
their navigation pane. Text is escaped as follows:

* ``\\``, ``{`` and ``}`` are backslash-escaped;
* a newline in section content starts a new Normal paragraph (``\\par``), a tab is ``\\tab``;
* every non-ASCII character is ``\\uN`` with ``N`` the signed 16-bit code unit, characters beyond
  the BMP as their UTF-16 surrogate pair, each followed (``\\uc1``) by one fallback character for
  readers without Unicode support: the cp1252 byte ``\\'xx`` where the character exists in
  cp1252, ``?`` otherwise;
* other control characters are dropped.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass, field

__all__ = [
    "FORMATS",
    "ExportSection",
    "NoteDocument",
    "export_filename",
    "render",
    "render_rtf",
    "render_txt",
]


@dataclass(frozen=True)
class ExportSection:
    """One section of a note: its display ``title``, stable ``label``, ``content`` and ``order``."""

    title: str
    label: str
    content: str
    order: int


@dataclass(frozen=True)
class NoteDocument:
    """Everything an exported note shows. ``created_at``/``updated_at`` are tz-aware (UTC)."""

    note_id: str
    name: str
    gender: str
    external_id: str
    language: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    metadata: list[tuple[str, str]] = field(default_factory=list)
    sections: list[ExportSection] = field(default_factory=list)


FORMATS: dict[str, tuple[str, str]] = {
    "txt": ("text/plain; charset=utf-8", "txt"),
    "rtf": ("application/rtf", "rtf"),
}
"""Export format -> (Content-Type, file extension)."""


# --------------------------------------------------------------------------------------------
# Content shared by both formats
# --------------------------------------------------------------------------------------------

_FALLBACK_LANGUAGE = "en"

_LABELS: dict[str, dict[str, str]] = {
    "pt": {
        "title": "Nota clínica",
        "name": "Paciente",
        "gender": "Gênero",
        "external_id": "ID externo",
        "date": "Data",
    },
    "en": {
        "title": "Clinical note",
        "name": "Patient",
        "gender": "Gender",
        "external_id": "External ID",
        "date": "Date",
    },
    "es": {
        "title": "Nota clínica",
        "name": "Paciente",
        "gender": "Género",
        "external_id": "ID externo",
        "date": "Fecha",
    },
}


def _labels(language: str) -> dict[str, str]:
    """Labels for ``language`` (a tag such as ``"pt-BR"`` reads as ``"pt"``), English otherwise."""
    primary = (language or "").strip().replace("_", "-").split("-", 1)[0].lower()
    return _LABELS.get(primary, _LABELS[_FALLBACK_LANGUAGE])


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean(text: str, *, keep_newlines: bool) -> str:
    """Drop control characters (except tab, and newline when ``keep_newlines``).

    Newlines are normalised to ``\\n``; for single-line fields they become spaces. Lone surrogates
    (not encodable in UTF-8 nor meaningful in RTF) become U+FFFD.
    """
    text = _normalise_newlines(text or "")
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\n" if keep_newlines else " ")
        elif ch == "\t":
            out.append(ch)
        elif unicodedata.category(ch) == "Cc":
            continue
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _line(text: str) -> str:
    """A single-line field: cleaned, newlines folded into spaces, surrounding blanks stripped."""
    return _clean(text, keep_newlines=False).strip()


def _body(text: str) -> str:
    """Section content: cleaned, without leading blank lines nor trailing whitespace."""
    cleaned = _clean(text, keep_newlines=True).rstrip()
    lines = cleaned.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def _format_date(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _Content:
    title: str
    fields: list[tuple[str, str]]
    sections: list[tuple[str, str]]


def _content(document: NoteDocument) -> _Content:
    """What both formats show, already cleaned, with empty fields and sections left out."""
    labels = _labels(document.language)
    fields: list[tuple[str, str]] = []
    for key, value in (
        ("name", document.name),
        ("gender", document.gender),
        ("external_id", document.external_id),
    ):
        value = _line(value)
        if value:
            fields.append((labels[key], value))
    if document.created_at is not None:
        fields.append((labels["date"], _format_date(document.created_at)))
    for key, value in document.metadata or []:
        key, value = _line(key), _line(value)
        if key or value:
            fields.append((key, value))
    sections: list[tuple[str, str]] = []
    for section in sorted(document.sections or [], key=lambda s: s.order):
        body = _body(section.content)
        if not body:
            continue
        title = _line(section.title) or _line(section.label)
        sections.append((title, body))
    return _Content(title=labels["title"], fields=fields, sections=sections)


def _field_line(key: str, value: str) -> str:
    if key and value:
        return f"{key}: {value}"
    return key or value


# --------------------------------------------------------------------------------------------
# TXT
# --------------------------------------------------------------------------------------------


def render_txt(document: NoteDocument) -> bytes:
    """The note as UTF-8 plain text (no BOM), ``\\n`` newlines, ending with exactly one newline."""
    content = _content(document)
    blocks: list[str] = [f"{content.title}\n{'=' * len(content.title)}"]
    if content.fields:
        blocks.append("\n".join(_field_line(key, value) for key, value in content.fields))
    for title, body in content.sections:
        blocks.append(f"{title}\n{'-' * len(title)}\n{body}" if title else body)
    return ("\n\n".join(blocks) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# RTF
# --------------------------------------------------------------------------------------------

_RTF_HEADER = (
    "{\\rtf1\\ansi\\ansicpg1252\\deff0\\uc1\n"
    "{\\fonttbl{\\f0\\fswiss\\fcharset0 Arial;}}\n"
    "{\\stylesheet"
    "{\\s0\\ql\\sa120\\f0\\fs22 Normal;}"
    "{\\s1\\ql\\sb240\\sa120\\keepn\\outlinelevel0\\b\\f0\\fs36\\sbasedon0\\snext0 heading 1;}"
    "{\\s2\\ql\\sb240\\sa60\\keepn\\outlinelevel1\\b\\f0\\fs28\\sbasedon0\\snext0 heading 2;}"
    "}\n"
)
# Paragraph openers repeat the style's properties, as RTF requires (``\sN`` only names the
# style). ``\pard\plain`` resets paragraph and character formatting so headings never bleed
# into the paragraphs that follow.
_RTF_H1 = "\\pard\\plain\\s1\\ql\\sb240\\sa120\\keepn\\outlinelevel0\\b\\f0\\fs36 "
_RTF_H2 = "\\pard\\plain\\s2\\ql\\sb240\\sa60\\keepn\\outlinelevel1\\b\\f0\\fs28 "
_RTF_NORMAL = "\\pard\\plain\\s0\\ql\\sa120\\f0\\fs22 "


def _rtf_char(ch: str) -> str:
    """One (already cleaned) character as RTF."""
    if ch == "\\":
        return "\\\\"
    if ch == "{":
        return "\\{"
    if ch == "}":
        return "\\}"
    if ch == "\t":
        # The trailing space ends the control word and is consumed by the reader.
        return "\\tab "
    if ch == "\n":
        return "\\par\n"
    code = ord(ch)
    if code < 0x80:
        return ch
    try:
        cp1252 = ch.encode("cp1252")
        fallback = f"\\'{cp1252[0]:02x}"
    except UnicodeEncodeError:
        fallback = "?"
    if code <= 0xFFFF:
        units = [code]
    else:
        code -= 0x10000
        units = [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]
        fallback = "?"
    # ``\uN`` takes a signed 16-bit decimal; the fallback (one character: ``\uc1``) ends the
    # control word, so no delimiter space is needed and a following digit or space stays text.
    # striprtf 0.0.35 reads negative N (adds 0x10000) and skips ``\'xx`` and ``?`` fallbacks as
    # one character each, exactly as Word and LibreOffice do.
    return "".join(f"\\u{unit - 0x10000 if unit > 0x7FFF else unit}{fallback}" for unit in units)


def _rtf_escape(text: str) -> str:
    """Escape cleaned text (newlines already mapped as wanted) into 7-bit RTF."""
    return "".join(_rtf_char(ch) for ch in text)


def _rtf_paragraph(opener: str, text: str) -> str:
    return f"{opener}{_rtf_escape(text)}\\par\n"


def render_rtf(document: NoteDocument) -> bytes:
    """The note as an RTF 1.x document in pure 7-bit ASCII."""
    content = _content(document)
    parts: list[str] = [
        _RTF_HEADER,
        f"{{\\info{{\\title {_rtf_escape(content.title)}}}}}\n",
        _rtf_paragraph(_RTF_H1, content.title),
    ]
    for key, value in content.fields:
        parts.append(_rtf_paragraph(_RTF_NORMAL, _field_line(key, value)))
    for title, body in content.sections:
        if title:
            parts.append(_rtf_paragraph(_RTF_H2, title))
        # Every "\n" in the body becomes "\par": the following paragraphs inherit the Normal
        # paragraph properties set by this \pard, so they stay body text.
        parts.append(_rtf_paragraph(_RTF_NORMAL, body))
    parts.append("}\n")
    return "".join(parts).encode("ascii")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def export_filename(document: NoteDocument, ext: str) -> str:
    """``note-<note_id>.<ext>``, reduced to ``[A-Za-z0-9._-]`` so it is safe in Content-Disposition."""
    note_id = _UNSAFE_FILENAME.sub("_", document.note_id or "").strip("._")[:100]
    safe_ext = _UNSAFE_FILENAME.sub("", (ext or "").lstrip(".")) or "txt"
    stem = f"note-{note_id}" if note_id else "note"
    return f"{stem}.{safe_ext}"


_RENDERERS = {"txt": render_txt, "rtf": render_rtf}


def render(document: NoteDocument, fmt: str) -> tuple[bytes, str, str]:
    """Render ``document`` as ``fmt`` (``"txt"`` or ``"rtf"``, case-insensitive).

    Returns:
        ``(content, content_type, filename)``.

    Raises:
        ValueError: ``fmt`` is not a known format.
    """
    key = fmt.strip().lower() if isinstance(fmt, str) else ""
    if key not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {sorted(FORMATS)}")
    content_type, ext = FORMATS[key]
    return _RENDERERS[key](document), content_type, export_filename(document, ext)
