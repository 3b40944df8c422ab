"""An optional note generator that asks any OpenAI-compatible chat endpoint (vLLM, llama.cpp
server, Ollama, ...) for the note, then keeps only what it can trace back to the transcript.

The model gets the transcript as numbered lines and must answer JSON (a JSON schema is sent as
``response_format``): sections by stable label, each a list of sentences citing the line numbers
they come from. Every sentence is verified against the lines it cites: the citations must exist,
every number in the sentence must be said there, and most of its content words must appear there.
Sentences that fail are dropped (counted, never logged with their text). Any error, timeout,
malformed answer, or an answer with nothing left after verification makes :meth:`generate` return
``None``, and the caller falls back to the offline rules generator.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from services.notegen.domain.generator import GeneratedNote, GeneratedSection, TranscriptSegment
from services.notegen.domain.numbers import find_numbers, fold
from services.notegen.domain.sections import SECTION_LABELS, title_for

log = logging.getLogger(__name__)

# A sentence is kept when at least this share of its content words is said in the lines it cites.
MIN_SUPPORT = 0.6
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# Words that carry no fact: ignored when checking support (all three languages, folded).
_STOP = {
    "the", "and", "for", "with", "that", "this", "from", "have", "has", "was", "were", "will", "are", "his", "her",
    "their", "patient", "owner", "reports", "reported", "states", "stated", "noted", "also", "should", "which",
    "para", "com", "que", "uma", "por", "dos", "das", "nos", "nas", "tutor", "tutora", "paciente", "relata",
    "refere", "foi", "sao", "esta", "como", "pelo", "pela", "ser", "tem", "con", "los", "las", "del", "una",
    "propietario", "refiere", "segun", "fue", "han", "sus",
}


@dataclass(frozen=True)
class LlmConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.0


def note_schema() -> dict[str, Any]:
    """The JSON schema the model's answer must follow."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["sections"],
        "properties": {
            "sections": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["label", "sentences"],
                    "properties": {
                        "label": {"type": "string", "enum": list(SECTION_LABELS)},
                        "sentences": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["text", "lines"],
                                "properties": {
                                    "text": {"type": "string"},
                                    "lines": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                },
                            },
                        },
                    },
                },
            }
        },
    }


_LANGUAGE_NAMES = {"pt": "Portuguese", "en": "English", "es": "Spanish"}


def build_messages(
    segments: Sequence[TranscriptSegment], language: str, domain: str, instructions: str | None
) -> list[dict[str, str]]:
    """The chat messages: what to write, the rules, then the numbered transcript."""
    who = "veterinarian and the animal's owner" if domain == "veterinary" else "physician and the patient"
    system = (
        f"You write the clinical note of a consultation between a {who}, in "
        f"{_LANGUAGE_NAMES.get(language, 'the language of the consultation')}. Use only facts said in the "
        "transcript; never add anything. Sections, by label: "
        + ", ".join(SECTION_LABELS)
        + ". Omit a section with nothing to say. Write numbers as digits. Every sentence cites the numbers of "
        "the transcript lines it comes from. Answer only with JSON matching the schema."
    )
    if instructions:
        system += f" The clinician's instructions for this note: {instructions.strip()[:2000]}"
    lines = "\n".join(
        f"[{index}] {segment.speaker} ({segment.start_ms // 1000}s): {segment.text.strip()}"
        for index, segment in enumerate(segments)
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Transcript:\n{lines}"}]


class LlmGenerator:
    """Calls the chat endpoint; returns a verified note, or None to fall back."""

    def __init__(self, config: LlmConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)
        self.name = f"llm:{config.model}"[:64]

    async def close(self) -> None:
        await self._client.aclose()

    async def generate(
        self,
        segments: Sequence[TranscriptSegment],
        language: str,
        domain: str,
        instructions: str | None = None,
        number_words: Any = None,
    ) -> GeneratedNote | None:
        """The verified note, or None on any failure (logged without content)."""
        try:
            answer = await self._ask(segments, language, domain, instructions)
            sections = self._verify(answer, segments, language)
        except Exception as exc:  # noqa: BLE001 - any failure means "fall back", logged by kind only
            log.warning("llm generator failed; falling back", extra={"error": type(exc).__name__})
            return None
        if not sections:
            log.warning("llm generator: nothing traceable in the answer; falling back")
            return None
        return GeneratedNote(language=language, sections=sections, generator=self.name)

    async def _ask(
        self, segments: Sequence[TranscriptSegment], language: str, domain: str, instructions: str | None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        response = await self._client.post(
            f"{self.config.base_url.rstrip('/')}/chat/completions",
            headers=headers,
            json={
                "model": self.config.model,
                "temperature": self.config.temperature,
                "messages": build_messages(segments, language, domain, instructions),
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "clinical_note", "strict": True, "schema": note_schema()},
                },
            },
            timeout=self.config.timeout_s,
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        data = json.loads(content)
        if not isinstance(data, dict) or not isinstance(data.get("sections"), list):
            raise ValueError("answer does not follow the schema")
        return data

    def _verify(
        self, answer: dict[str, Any], segments: Sequence[TranscriptSegment], language: str
    ) -> list[GeneratedSection]:
        folded_lines = [fold(segment.text) for segment in segments]
        kept: dict[str, tuple[list[str], set[int]]] = {}
        dropped = 0
        for section in answer["sections"]:
            label = section.get("label") if isinstance(section, dict) else None
            if label not in SECTION_LABELS:
                dropped += 1
                continue
            for sentence in section.get("sentences") or []:
                text = sentence.get("text") if isinstance(sentence, dict) else None
                lines = sentence.get("lines") if isinstance(sentence, dict) else None
                if not isinstance(text, str) or not text.strip() or not isinstance(lines, list):
                    dropped += 1
                    continue
                cited = [line for line in lines if isinstance(line, int) and 0 <= line < len(segments)]
                if not cited or not supported(text, [folded_lines[line] for line in cited]):
                    dropped += 1
                    continue
                sentences, sources = kept.setdefault(label, ([], set()))
                sentences.append(text.strip())
                sources.update(cited)
        if dropped:
            log.info("llm generator: dropped untraceable sentences", extra={"dropped": dropped})
        order = {label: index for index, label in enumerate(SECTION_LABELS)}
        return [
            GeneratedSection(
                label=label,
                title=title_for(label, language),
                content=" ".join(sentences),
                order=order[label] + 1,
                source_segments=sorted(sources),
            )
            for label, (sentences, sources) in sorted(kept.items(), key=lambda item: order[item[0]])
        ]


def supported(sentence: str, cited_lines: Sequence[str]) -> bool:
    """Whether the (folded) lines a sentence cites say what it says: every number, and most words."""
    source = " ".join(cited_lines)
    source_numbers = {number.replace(",", ".") for number in _NUMBER.findall(source)}
    spoken = _spoken_numbers(source)
    for number in _NUMBER.findall(sentence):
        value = number.replace(",", ".")
        if value not in source_numbers and value not in spoken:
            return False
    words = [word for word in _WORD.findall(fold(sentence)) if len(word) >= 4 and word not in _STOP
             and not word.isdigit()]
    if not words:
        return True
    source_words = set(_WORD.findall(source))
    hits = sum(1 for word in words if word in source_words or any(s.startswith(word[:5]) for s in source_words
                                                                   if len(word) >= 6))
    return hits / len(words) >= MIN_SUPPORT


def _spoken_numbers(folded: str) -> set[str]:
    """Numbers said in words in ``folded`` text, as digit strings."""
    found: set[str] = set()
    for number in find_numbers(folded):
        value = float(number.value)
        found.add(str(int(value)) if value.is_integer() else repr(value))
    return found


FOLLOW_UP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}
_LANGUAGE_NAMES = {"pt": "Portuguese", "en": "English", "es": "Spanish"}


async def write_follow_up(
    generator: LlmGenerator, facts: dict[str, Any], draft: str, language: str, instructions: str
) -> str | None:
    """A follow-up message to the owner / patient written by the model from ``facts`` and following
    ``instructions``; None on any failure (logged without content), so the caller keeps ``draft``.

    Only facts from the note go to the model; ``draft`` is the template's message, which the model
    may rephrase but must not contradict.
    """
    config = generator.config
    system = (
        f"You write one short follow-up message from a clinic to the owner or patient, in "
        f"{_LANGUAGE_NAMES.get(language, 'English')}, resuming the consultation described by the facts. "
        "Use only these facts; never invent a diagnosis, drug, dose or date. Name the patient and every "
        "medication given. Follow the clinic's instructions about tone and purpose. Answer as JSON "
        '{"message": "..."}.'
    )
    user = json.dumps(
        {"facts": facts, "draft": draft, "instructions": instructions}, ensure_ascii=False
    )
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        response = await generator._client.post(
            f"{config.base_url.rstrip('/')}/chat/completions",
            headers=headers,
            json={
                "model": config.model,
                "temperature": config.temperature,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "follow_up", "strict": True, "schema": FOLLOW_UP_SCHEMA},
                },
            },
            timeout=config.timeout_s,
        )
        response.raise_for_status()
        message = json.loads(response.json()["choices"][0]["message"]["content"])["message"]
    except Exception as exc:  # noqa: BLE001 - any failure means "keep the template's message"
        log.warning("llm follow-up failed; using the template", extra={"error": type(exc).__name__})
        return None
    if not isinstance(message, str) or not message.strip():
        return None
    return message.strip()[:4000]
