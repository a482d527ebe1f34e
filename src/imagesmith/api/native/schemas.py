"""The native dialect's request bodies (camelCase, as in the seed pages)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from imagesmith.catalog.params import COUNT_BOUND, MAX_SEED, SIDE_BOUND
from imagesmith.generation.aspect import ASPECT_RATIOS
from imagesmith.generation.enhance import DEFAULT_TEMPLATE, TEMPLATES
from imagesmith.generation.schemas import MAX_PROMPT, GenerationRequest, check_meta
from imagesmith.image.names import NEW_FLOW, check_alias, check_uuid

# Free JSON stored with a record, at most MAX_META_BYTES.
Meta = Annotated[dict[str, Any], AfterValidator(check_meta)]

NATIVE_NAMES = {
    "aspect_ratio": "aspectRatio",
    "steps": "steps",
    "guidance_scale": "guidanceScale",
    "scheduler": "scheduler",
    "num_outputs": "numOutputs",
    "prompt_strength": "promptStrength",
    "init_image": "initImage",
    "model": "model",
    "webhook_url": "webhookUrl",
    "webhook_events": "webhookEvents",
}


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EnhancementOptions(_Body):
    template: str = Field(DEFAULT_TEMPLATE, description=f"One of: {', '.join(TEMPLATES)}")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value not in TEMPLATES:
            raise ValueError(f"template '{value}' is not one of: {', '.join(TEMPLATES)}")
        return value


class _PromptFields(_Body):
    @field_validator("prompt", check_fields=False)
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("prompt must not be empty")
        if len(value) > MAX_PROMPT:
            raise ValueError(f"prompt is {len(value)} characters; the limit is {MAX_PROMPT}")
        return value

    @field_validator("aspect_ratio", check_fields=False)
    @classmethod
    def _aspect(cls, value: str | None) -> str | None:
        if value is not None and value not in ASPECT_RATIOS:
            raise ValueError(f"aspectRatio '{value}' is not one of: {', '.join(ASPECT_RATIOS)}")
        return value

    @field_validator("flow_id", check_fields=False)
    @classmethod
    def _flow(cls, value: str | None) -> str | None:
        return check_uuid(value, "flowId")


class GenerationCreate(_PromptFields):
    """Body of POST /api/v1/generations."""

    prompt: str = Field(description="Text description of the image to generate")
    aspect_ratio: str = Field("1:1", description=f"One of: {', '.join(ASPECT_RATIOS)}")
    # JSON booleans only: pydantic's lax mode would read "yes" or 1 as true.
    auto_enhance: StrictBool = Field(True, description="Rewrite the prompt with the template first")
    enhancement_options: EnhancementOptions | None = None
    meta: Meta = Field(default_factory=dict, description="Free JSON stored with the record")
    flow_id: str | None = Field(
        None, description="Omitted: a new flow id is issued; null: no flow; UUID: join that flow"
    )
    alias: str | None = Field(
        None,
        validation_alias=AliasChoices("alias", "assignAlias"),
        description="Project alias for the output image, e.g. @hero",
    )
    flow_alias: str | None = Field(
        None,
        validation_alias=AliasChoices("flowAlias", "assignFlowAlias", "flow_alias"),
        description="Flow-scoped alias for the output image",
    )
    reference_images: list[str] = Field(
        default_factory=list, max_length=3, description="Image ids or @aliases (at most 3)"
    )
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT)
    model: str | None = Field(None, description="Model id; default: the server's default model")
    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random when absent; reported back"
    )
    scheduler: str | None = Field(None, description="A scheduler id such as K_EULER or DPM++_2M")
    width: int | None = Field(
        None, ge=1, le=SIDE_BOUND, description="Explicit size in pixels (instead of aspectRatio)"
    )
    height: int | None = Field(
        None, ge=1, le=SIDE_BOUND, description="Explicit size in pixels (instead of aspectRatio)"
    )
    num_outputs: int = Field(
        1, ge=1, le=COUNT_BOUND, description="Images to make from this request (1-4)"
    )
    init_image: str | None = Field(
        None, description="img2img: an upload reference, an image id, or a public http(s) URL"
    )
    prompt_strength: float | None = Field(
        None, description="img2img: 0 keeps the init image, 1 follows only the prompt (0.5)"
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Also POST this generation's events here, signed with the project's "
        "webhook secret (Standard Webhooks)",
    )
    webhook_events: list[str] | None = Field(
        None,
        max_length=10,
        description="Events for webhookUrl: generation.started, .completed, .failed, "
        ".cancelled (the default), .progress (only when asked for)",
    )

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        return check_alias(value, "alias")

    @field_validator("flow_alias")
    @classmethod
    def _flow_alias(cls, value: str | None) -> str | None:
        return check_alias(value, "flowAlias")

    def to_request(self) -> GenerationRequest:
        return GenerationRequest(
            field_names=NATIVE_NAMES,
            prompt=self.prompt,
            aspect_ratio=(
                None if self.width is not None or self.height is not None else self.aspect_ratio
            ),
            auto_enhance=self.auto_enhance,
            template=(
                self.enhancement_options.template if self.enhancement_options else DEFAULT_TEMPLATE
            ),
            negative_prompt=self.negative_prompt,
            model_id=self.model,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            scheduler=self.scheduler,
            width=self.width,
            height=self.height,
            num_outputs=self.num_outputs,
            init_image=self.init_image,
            prompt_strength=self.prompt_strength,
            meta=self.meta,
            flow_id=self.flow_id if "flow_id" in self.model_fields_set else NEW_FLOW,
            alias=self.alias,
            flow_alias=self.flow_alias,
            reference_images=self.reference_images,
            webhook_url=self.webhook_url,
            webhook_events=self.webhook_events,
        )


class GenerationUpdate(_PromptFields):
    """Body of PUT/PATCH /api/v1/generations/:id: prompt or aspectRatio regenerate in place."""

    prompt: str | None = None
    aspect_ratio: str | None = None
    flow_id: str | None = None
    meta: Meta | None = None

    @model_validator(mode="after")
    def _no_null_content(self) -> GenerationUpdate:
        for name, label in (("prompt", "prompt"), ("aspect_ratio", "aspectRatio")):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{label} cannot be null: leave it out to keep the current one")
        return self
