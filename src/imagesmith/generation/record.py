"""The generation record in the native shape (camelCase, as in the seed pages): what the native
API answers and what every webhook payload carries as `data`, whichever dialect made it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from imagesmith.generation.schemas import GenerationView
from imagesmith.image.links import ImageLinks, iso
from imagesmith.models import Image


class OutputImage(BaseModel):
    id: str
    storageUrl: str
    mimeType: str
    width: int
    height: int
    fileSize: int
    alias: str | None = None


class ReferenceOut(BaseModel):
    id: str
    storageUrl: str
    alias: str | None


class ProgressOut(BaseModel):
    step: int
    total: int


class GenerationOut(BaseModel):
    id: str
    projectId: str
    flowId: str | None
    status: str
    prompt: str
    originalPrompt: str
    autoEnhance: bool
    enhancementOptions: dict[str, str] | None
    enhancedBy: str | None
    aspectRatio: str | None
    negativePrompt: str | None
    model: str
    width: int
    height: int
    steps: int
    guidanceScale: float
    seed: int
    referenceImages: list[ReferenceOut]
    referencedImages: list[dict[str, str | None]]
    alias: str | None
    flowAlias: str | None
    outputImageId: str | None
    outputImage: OutputImage | None
    outputImages: list[OutputImage]
    numOutputs: int
    scheduler: str | None
    initImage: str | None
    promptStrength: float | None
    progress: ProgressOut | None
    processingTimeMs: int | None
    retryCount: int
    errorMessage: str | None
    meta: dict[str, Any]
    createdAt: str
    updatedAt: str
    startedAt: str | None
    completedAt: str | None


def render_image(image: Image, links: ImageLinks, org_slug: str, project_slug: str) -> OutputImage:
    return OutputImage(
        id=image.id,
        storageUrl=links.url(image, org_slug, project_slug),
        mimeType=image.mime_type,
        width=image.width,
        height=image.height,
        fileSize=image.file_size,
        alias=image.alias,
    )


def render_generation(view: GenerationView, links: ImageLinks) -> GenerationOut:
    g = view.generation
    progress = None
    if g.progress_total is not None:
        progress = ProgressOut(step=g.progress_step or 0, total=g.progress_total)
    return GenerationOut(
        id=g.id,
        projectId=g.project_id,
        flowId=g.flow_id,
        status=g.status.value,
        prompt=g.prompt,
        originalPrompt=g.original_prompt,
        autoEnhance=g.auto_enhance,
        enhancementOptions={"template": g.enhancement_template or "general"}
        if g.auto_enhance
        else None,
        enhancedBy=g.enhanced_by,
        aspectRatio=g.aspect_ratio,
        negativePrompt=g.negative_prompt,
        model=g.model_id,
        width=g.width,
        height=g.height,
        steps=g.steps,
        guidanceScale=g.guidance_scale,
        seed=g.seed,
        referenceImages=[
            ReferenceOut(
                id=image.id,
                storageUrl=links.url(image, view.org_slug, view.project_slug),
                alias=image.alias,
            )
            for image in view.references
        ],
        referencedImages=[{"imageId": image.id, "alias": image.alias} for image in view.references],
        alias=g.alias,
        flowAlias=g.flow_alias,
        outputImageId=g.output_image_id,
        outputImage=(
            render_image(view.image, links, view.org_slug, view.project_slug)
            if view.image
            else None
        ),
        outputImages=[
            render_image(image, links, view.org_slug, view.project_slug) for image in view.images
        ],
        numOutputs=g.num_outputs,
        scheduler=g.scheduler,
        initImage=g.init_image_ref,
        promptStrength=g.prompt_strength,
        progress=progress,
        processingTimeMs=g.processing_time_ms,
        retryCount=g.retry_count,
        errorMessage=g.error_message,
        meta=dict(g.meta or {}),
        createdAt=iso(g.created_at) or "",
        updatedAt=iso(g.updated_at) or "",
        startedAt=iso(g.started_at),
        completedAt=iso(g.completed_at),
    )
