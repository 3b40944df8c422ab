"""TXT and RTF export of a note (services/query/export.py).

The RTF is checked by reading it back with an independent parser, ``striprtf``, which honours
``\\uc1``, ``\\uN`` (negative N included) and the ``\\'xx`` / ``?`` fallback characters. The only
normalisation applied to its output is whitespace-related (line-trailing blanks, blank lines at the
ends), plus one: striprtf returns a UTF-16 surrogate pair (``\\u-10179?\\u-8704?``) as two lone
surrogate code points rather than one character, so they are recombined before comparing.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from striprtf.striprtf import rtf_to_text

from services.query.export import (
    FORMATS,
    ExportSection,
    NoteDocument,
    export_filename,
    render,
    render_rtf,
    render_txt,
)

CREATED = dt.datetime(2024, 3, 9, 14, 5, 59, tzinfo=dt.timezone.utc)
UPDATED = dt.datetime(2024, 3, 10, 8, 0, tzinfo=dt.timezone.utc)

PT_SECTIONS = [
    ExportSection(
        title="Avaliação / Diagnóstico",
        label="assessment",
        content=(
            "Suspeita de otite crônica à direita; ausência de febre.\n"
            "\n"
            "- Dor à palpação: sim\n"
            "- Secreção: purulenta {++}\n"
            "\tObservação: pH \\ 7,4 — ver exame nº 3 e 2ª coleta.\n"
            "\n"
            "Último parágrafo: ÁÉÍÓÚ Ç ã õ â ê ô ü à, custo 120 € 😀"
        ),
        order=4,
    ),
    ExportSection(
        title="Queixa principal",
        label="chief_complaint",
        content="Coceira na orelha há três dias; tutora relata balançar de cabeça.",
        order=1,
    ),
    ExportSection(title="Prescrições", label="prescriptions", content="   \n\n  ", order=6),
    ExportSection(
        title="Orientações ao tutor",
        label="owner_instructions",
        content="Limpar com solução {otológica} 2×/dia.\nRetornar em 7 dias — ou antes, se piorar.",
        order=7,
    ),
    ExportSection(title="Plano", label="plan", content="", order=5),
]

ES_SECTIONS = [
    ExportSection(
        title="Motivo de consulta",
        label="chief_complaint",
        content="¿Dolor abdominal? ¡Sí! Niño de 7 años, año pasado cirugía.",
        order=1,
    ),
    ExportSection(
        title="Evaluación / Diagnóstico",
        label="assessment",
        content=(
            "Gastroenteritis aguda; pingüino de peluche ingerido (broma).\n\n"
            "Ñ ñ Á É Í Ó Ú á é í ó ú ü\tº ª € ¿ ¡\n"
            "Ruta: C:\\Datos\\{paciente}\\notas 🩺"
        ),
        order=2,
    ),
    ExportSection(title="Seguimiento", label="follow_up", content="Control en 48 h.", order=3),
]


def _doc(language: str = "pt", sections: list[ExportSection] | None = None, **overrides) -> NoteDocument:
    values = dict(
        note_id="0f8b2c1e-7d3a-4e5f-9a6b-1c2d3e4f5a6b",
        name="João Conceição",
        gender="Masculino",
        external_id="PRT-ç-001",
        language=language,
        created_at=CREATED,
        updated_at=UPDATED,
        metadata=[("Espécie", "Cão"), ("Raça", "Spitz alemão {anão}")],
        sections=PT_SECTIONS if sections is None else sections,
    )
    values.update(overrides)
    return NoteDocument(**values)


def _pt() -> NoteDocument:
    return _doc("pt", PT_SECTIONS)


def _es() -> NoteDocument:
    return _doc(
        "es",
        ES_SECTIONS,
        name="María Núñez",
        gender="Femenino",
        external_id="ES-Ñ-42",
        metadata=[("Clínica", "Peñalolén"), ("Señal", "¡urgente!")],
    )


def _rtf_text(document: NoteDocument) -> str:
    """The RTF read back by striprtf, surrogate pairs recombined, whitespace-normalised."""
    text = rtf_to_text(render_rtf(document).decode("ascii"))
    text = text.encode("utf-16", "surrogatepass").decode("utf-16")
    return _norm(text)


def _norm(text: str) -> str:
    """Whitespace-only normalisation: no trailing blanks per line, no blank lines at the ends."""
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _non_empty(sections: list[ExportSection]) -> list[ExportSection]:
    return sorted((s for s in sections if s.content.strip()), key=lambda s: s.order)


# ---------------------------------------------------------------------------------- RTF


@pytest.mark.parametrize("make", [_pt, _es], ids=["pt", "es"])
def test_rtf_read_back_by_striprtf_gives_every_text(make) -> None:
    document = make()
    text = _rtf_text(document)
    expected_title = "Nota clínica"
    assert text.startswith(expected_title + "\n")
    for value in (document.name, document.gender, document.external_id):
        assert value in text
    assert "2024-03-09 14:05 UTC" in text
    for key, value in document.metadata:
        assert f"{key}: {value}" in text
    for section in _non_empty(document.sections):
        assert f"\n{section.title}\n" in text
        # Content comes back exactly: newlines, blank lines, tabs, braces, backslashes, accents.
        assert f"\n{section.title}\n{_norm(section.content)}" in text
    for section in document.sections:
        if not section.content.strip():
            assert section.title not in text


def test_rtf_read_back_is_the_whole_document_in_order() -> None:
    document = _es()
    labels = ["Paciente: María Núñez", "Género: Femenino", "ID externo: ES-Ñ-42",
              "Fecha: 2024-03-09 14:05 UTC", "Clínica: Peñalolén", "Señal: ¡urgente!"]
    body = [f"{s.title}\n{s.content}" for s in _non_empty(document.sections)]
    assert _rtf_text(document) == _norm("\n".join(["Nota clínica", *labels, *body]))


def test_rtf_is_ascii_balanced_and_well_formed() -> None:
    for document in (_pt(), _es()):
        data = render_rtf(document)
        assert data.startswith(b"{\\rtf1\\ansi\\ansicpg1252\\deff0\\uc1")
        assert all(byte < 0x80 for byte in data)
        text = data.decode("ascii")
        depth = 0
        escaped = re.sub(r"\\[\\{}]", "", text)  # escaped \\ \{ \} are text, not groups
        for index, char in enumerate(escaped):
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                assert depth >= 0
                if depth == 0:
                    assert escaped[index + 1:].strip() == "", "content after the document group"
        assert depth == 0
        assert "{\\fonttbl{\\f0\\fswiss\\fcharset0 Arial;}}" in text
        assert "{\\info{\\title Nota cl\\u237\\'ednica}}" in text


def test_rtf_character_encoding() -> None:
    content = "ç € — 中 \uf8ff 😀 a{b}c\\d\te\x00\x07\x1b\x7f\x85f\r\ng\rh"
    document = _doc("en", [ExportSection("T", "t", content, 1)], name="", gender="",
                    external_id="", metadata=[])
    text = render_rtf(document).decode("ascii")
    body = text.rsplit("\\fs22 ", 1)[-1]  # the section's Normal paragraph(s)
    assert body.startswith(
        "\\u231\\'e7 \\u8364\\'80 \\u8212\\'97 \\u20013? \\u-1793? \\u-10179?\\u-8704? "
        "a\\{b\\}c\\\\d\\tab ef\\par\ng\\par\nh\\par\n"
    )
    # Control characters (other than newline and tab) are dropped; \r\n and \r are newlines.
    assert rtf_to_text(text).endswith("a{b}c\\d\tef\ng\nh\n")


def test_rtf_section_titles_use_the_heading_style() -> None:
    document = _pt()
    text = render_rtf(document).decode("ascii")
    stylesheet = re.search(r"\{\\stylesheet(.*?)\}\n", text).group(1)
    assert re.search(r"\{\\s0\\[^;]*Normal;\}", stylesheet)
    assert re.search(r"\{\\s1\\[^;]*\\outlinelevel0\\b\\[^;]*\\fs36[^;]* heading 1;\}", stylesheet)
    assert re.search(r"\{\\s2\\[^;]*\\outlinelevel1\\b\\[^;]*\\fs28[^;]* heading 2;\}", stylesheet)

    paragraphs = [p for p in re.split(r"(?=\\pard)", text) if p.startswith("\\pard")]
    headings = [p for p in paragraphs if p.startswith("\\pard\\plain\\s2")]
    titles = [rtf_to_text("{\\rtf1\\ansi\\ansicpg1252\\uc1 " + p + "}").strip() for p in headings]
    assert titles == [s.title for s in _non_empty(document.sections)]
    for heading in headings:
        assert "\\outlinelevel1" in heading and "\\b" in heading and "\\fs28" in heading
        assert len(re.findall(r"\\par(?![a-z])", heading)) == 1  # a heading is exactly one paragraph
    # The document title is Heading 1; every other paragraph resets to Normal (no bleeding).
    assert paragraphs[0].startswith("\\pard\\plain\\s1") and "\\outlinelevel0" in paragraphs[0]
    for paragraph in paragraphs[1:]:
        assert paragraph.startswith(("\\pard\\plain\\s2", "\\pard\\plain\\s0"))
        if paragraph.startswith("\\pard\\plain\\s0"):
            opener = paragraph.split(" ", 1)[0]
            assert "\\outlinelevel" not in opener and not re.search(r"\\b(?![a-z])", opener)
    # Right before each section title: the Heading 2 style and its outline level.
    for section in _non_empty(document.sections):
        assert re.search(r"\\pard\\plain\\s2(\\[a-z]+\d*)*\\outlinelevel1(\\[a-z]+\d*)* "
                         + re.escape(_latin_rtf(section.title)) + r"\\par\n", text)


def _latin_rtf(text: str) -> str:
    """Reference escaping for a BMP, cp1252-only, single-line string (independent of the module)."""
    out = []
    for char in text:
        if char in "\\{}":
            out.append("\\" + char)
        elif ord(char) < 0x80:
            out.append(char)
        else:
            out.append(f"\\u{ord(char)}\\'{char.encode('cp1252').hex()}")
    return "".join(out)


# ---------------------------------------------------------------------------------- TXT


def test_txt_is_utf8_with_everything_in_order() -> None:
    document = _pt()
    data = render_txt(document)
    assert not data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\r" not in text
    expected_sections = _non_empty(document.sections)
    expected = "\n\n".join(
        [
            "Nota clínica\n============",
            "Paciente: João Conceição\nGênero: Masculino\nID externo: PRT-ç-001\n"
            "Data: 2024-03-09 14:05 UTC\nEspécie: Cão\nRaça: Spitz alemão {anão}",
            *(f"{s.title}\n{'-' * len(s.title)}\n{s.content}" for s in expected_sections),
        ]
    ) + "\n"
    assert text == expected
    positions = [text.index(f"\n{s.title}\n") for s in expected_sections]
    assert positions == sorted(positions)
    assert "Prescrições" not in text and "Plano" not in text  # empty sections are left out


def test_txt_omits_empty_fields() -> None:
    document = _doc("en", [], name="", gender=" ", external_id="", metadata=[])
    assert render_txt(document).decode() == (
        "Clinical note\n=============\n\nDate: 2024-03-09 14:05 UTC\n"
    )


# ---------------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("language", "lines"),
    [
        ("pt", ["Nota clínica", "Paciente: ", "Gênero: ", "ID externo: ", "Data: "]),
        ("pt-BR", ["Nota clínica", "Paciente: ", "Gênero: ", "ID externo: ", "Data: "]),
        ("en", ["Clinical note", "Patient: ", "Gender: ", "External ID: ", "Date: "]),
        ("es", ["Nota clínica", "Paciente: ", "Género: ", "ID externo: ", "Fecha: "]),
        ("", ["Clinical note", "Patient: ", "Gender: ", "External ID: ", "Date: "]),
        ("fr", ["Clinical note", "Patient: ", "Gender: ", "External ID: ", "Date: "]),
    ],
)
def test_labels_are_localised(language: str, lines: list[str]) -> None:
    document = _doc(language)
    txt = render_txt(document).decode("utf-8").split("\n")
    rtf = _rtf_text(document).split("\n")
    for output in (txt, rtf):
        assert output[0] == lines[0]
        for prefix in lines[1:]:
            assert any(line.startswith(prefix) for line in output), (language, prefix)


def test_date_is_rendered_in_utc() -> None:
    local = dt.datetime(2024, 3, 9, 11, 5, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert "Date: 2024-03-09 14:05 UTC" in render_txt(_doc("en", created_at=local)).decode()


# ---------------------------------------------------------------------------------- render


def test_render_formats_and_filename() -> None:
    document = _pt()
    for fmt, (content_type, ext) in FORMATS.items():
        content, returned_type, filename = render(document, fmt)
        assert returned_type == content_type
        assert filename == f"note-{document.note_id}.{ext}"
        assert content == (render_txt(document) if fmt == "txt" else render_rtf(document))
    assert render(document, "rtf")[1] == "application/rtf"
    assert render(document, "txt")[1] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("note_id", ["abc", "ação/../\"x\"; y\r\nz", "", "😀", "a" * 500])
def test_filename_is_header_safe(note_id: str) -> None:
    for ext in ("txt", "rtf"):
        name = export_filename(_doc(note_id=note_id), ext)
        assert name.isascii()
        assert name.endswith(f".{ext}") and name.startswith("note")
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
        assert len(name) <= 120


@pytest.mark.parametrize("fmt", ["pdf", "", "docx", "rtf2", "../txt"])
def test_unknown_format_raises(fmt: str) -> None:
    with pytest.raises(ValueError):
        render(_pt(), fmt)
