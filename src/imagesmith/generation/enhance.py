"""Prompt enhancement: a built-in rewriter per template, and an optional LLM through any
OpenAI-compatible chat-completions endpoint that falls back to the built-in one."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import httpx

from imagesmith.config import Settings

log = logging.getLogger(__name__)

TEMPLATES = (
    "general",
    "photorealistic",
    "illustration",
    "minimalist",
    "sticker",
    "product",
    "comic",
)
DEFAULT_TEMPLATE = "general"
# A prompt this long is already detailed: add at most one missing facet.
DETAILED_WORDS = 25
PARTIAL_WORDS = 12


@dataclass(frozen=True)
class Facet:
    detect: re.Pattern[str]
    addition: str


@dataclass(frozen=True)
class Template:
    lead: str  # "{subject}" is replaced by the user's prompt
    style: re.Pattern[str]  # if the prompt already names the style, the lead is skipped
    facets: tuple[Facet, ...]
    instruction: str  # what the LLM is asked to do


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


LIGHT = _re(r"\b(light|lighting|lit|sunlight|sunset|sunrise|golden hour|glow|shadows?)\b")
DETAIL = _re(r"\b(detailed|detail|intricate|sharp|high[- ]resolution|4k|8k)\b")
COMPOSITION = _re(r"\b(composition|close-up|closeup|wide shot|portrait|centered|framing|view)\b")

BUILTIN_TEMPLATES: dict[str, Template] = {
    "general": Template(
        lead="{subject}",
        style=_re(r"$^"),
        facets=(
            Facet(COMPOSITION, "balanced composition"),
            Facet(LIGHT, "soft natural lighting"),
            Facet(_re(r"\b(colou?rs?|palette|vibrant|muted)\b"), "rich harmonious colors"),
            Facet(DETAIL, "highly detailed, sharp focus"),
        ),
        instruction="Rewrite the prompt into one vivid, specific image description with subject, "
        "setting, composition, lighting and color.",
    ),
    "photorealistic": Template(
        lead="A photorealistic photograph of {subject}",
        style=_re(r"\b(photo|photograph|photorealistic|realistic|dslr)\w*"),
        facets=(
            Facet(
                _re(r"\b(\d+ ?mm|lens|f/\d|camera|dslr|shot on)\b"),
                "captured with an 85mm lens at f/1.8",
            ),
            Facet(LIGHT, "soft natural window lighting"),
            Facet(
                _re(r"\b(bokeh|depth of field|dof|focus)\b"),
                "shallow depth of field with creamy bokeh",
            ),
            Facet(DETAIL, "highly detailed textures"),
        ),
        instruction="Rewrite as a photorealistic photograph: camera, lens, lighting, focus.",
    ),
    "illustration": Template(
        lead="A digital illustration of {subject}",
        style=_re(r"\b(illustration|illustrated|painting|drawing|artwork|watercolou?r)\w*"),
        facets=(
            Facet(
                _re(r"\b(style|styled|art ?style)\b"), "in a clean contemporary illustration style"
            ),
            Facet(COMPOSITION, "dynamic composition"),
            Facet(_re(r"\b(colou?rs?|palette)\b"), "harmonious color palette"),
            Facet(LIGHT, "soft painterly lighting"),
        ),
        instruction="Rewrite as an illustration: art style, composition, color palette.",
    ),
    "minimalist": Template(
        lead="A minimalist design of {subject}",
        style=_re(r"\b(minimal|minimalist|simple|flat)\w*"),
        facets=(
            Facet(_re(r"\b(background|backdrop)\b"), "on a plain background"),
            Facet(_re(r"\b(negative space|empty space|whitespace)\b"), "generous negative space"),
            Facet(_re(r"\b(colou?rs?|palette|monochrome)\b"), "limited color palette"),
            Facet(_re(r"\b(shapes?|lines?|geometric)\b"), "clean simple shapes"),
        ),
        instruction="Rewrite as a minimalist image: only essential elements, clean shapes, "
        "plain background, limited palette.",
    ),
    "sticker": Template(
        lead="A die-cut sticker of {subject}",
        style=_re(r"\b(sticker|emoji|decal)\w*"),
        facets=(
            Facet(_re(r"\b(outline|outlined|border)\b"), "bold white outline"),
            Facet(_re(r"\b(vector|flat)\b"), "flat vector style"),
            Facet(_re(r"\b(colou?rs?|palette)\b"), "limited bright colors"),
            Facet(_re(r"\b(background|backdrop)\b"), "on a plain background"),
        ),
        instruction="Rewrite as a die-cut sticker: bold outlines, flat vector style, few colors.",
    ),
    "product": Template(
        lead="A professional product photograph of {subject}",
        style=_re(r"\b(product|packshot|e-?commerce|catalog)\w*"),
        facets=(
            Facet(_re(r"\b(studio|softbox)\b"), "studio lighting with soft shadows"),
            Facet(_re(r"\b(background|backdrop|surface)\b"), "on a clean neutral background"),
            Facet(_re(r"\b(materials?|texture|finish|matte|glossy)\b"), "crisp material details"),
            Facet(COMPOSITION, "centered composition"),
        ),
        instruction="Rewrite as an e-commerce product photo: studio lighting, materials, "
        "clean background, optional lifestyle context.",
    ),
    "comic": Template(
        lead="A comic book panel of {subject}",
        style=_re(r"\b(comic|manga|cartoon|panel)\w*"),
        facets=(
            Facet(_re(r"\b(ink|inked|line ?art|outlines?)\b"), "bold ink line art"),
            Facet(_re(r"\b(action|motion|speed lines|dynamic)\b"), "dynamic action lines"),
            Facet(_re(r"\b(expression|expressive|emotion)\w*"), "expressive characters"),
            Facet(_re(r"\b(colou?rs?|halftone|shading)\b"), "halftone shading and vivid colors"),
        ),
        instruction="Rewrite as a comic panel: action lines, expressions, panel composition.",
    ),
}


@dataclass(frozen=True)
class Enhanced:
    prompt: str
    method: str  # "builtin", "llm:<model>" or "builtin (llm failed: …)"


def builtin_enhance(prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Deterministic: a short prompt gets the full template, a detailed one changes little."""
    spec = BUILTIN_TEMPLATES[template]
    text = " ".join(prompt.split()).rstrip(" .,")
    words = len(text.split())
    missing = [facet.addition for facet in spec.facets if not facet.detect.search(text)]
    if words >= DETAILED_WORDS:
        missing = missing[:1]
    elif words >= PARTIAL_WORDS:
        missing = missing[: (len(missing) + 1) // 2]
    if spec.style.search(text) or words >= DETAILED_WORDS:
        lead = text[:1].upper() + text[1:]
    else:
        subject = text[:1].lower() + text[1:] if re.match(r"(a|an|the)\b", text, re.I) else text
        lead = spec.lead.format(subject=subject)
        lead = lead[:1].upper() + lead[1:]
    return ", ".join([lead, *missing])


class PromptEnhancer:
    def __init__(
        self,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        timeout: float = 15.0,
    ):
        self.base_url = base_url.rstrip("/") if base_url else None
        self.model = model
        self.api_key = api_key
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptEnhancer:
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout_seconds,
        )

    @property
    def is_remote(self) -> bool:
        """Enhancing asks an LLM over the network (time and, usually, money)."""
        return self.base_url is not None

    async def enhance(self, prompt: str, template: str) -> Enhanced:
        if self.base_url is None:
            return Enhanced(builtin_enhance(prompt, template), "builtin")
        try:
            text = await self._ask_llm(prompt, template)
            return Enhanced(text, f"llm:{self.model}")
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            log.warning("enhance.llm_failed template=%s reason=%s", template, reason)
            # The record says what happened; the log has the details.
            method = f"builtin (llm failed: {type(exc).__name__})"
            return Enhanced(builtin_enhance(prompt, template), method)

    async def _ask_llm(self, prompt: str, template: str) -> str:
        spec = BUILTIN_TEMPLATES[template]
        system = (
            "You improve prompts for an image-generation model. Translate to English if needed. "
            f"{spec.instruction} If the prompt is already detailed, change only what is missing. "
            "Answer with the rewritten prompt only, at most 120 words, no quotes."
        )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(
                f"{self.base_url}/chat/completions",
                headers=headers,
                json={
                    "model": self.model,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                    ],
                    "temperature": 0.2,
                },
            )
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        text = " ".join(str(content).split()).strip("\"' ")
        if not text:
            raise ValueError("the LLM answered with an empty prompt")
        return text[:2000]
