"""Request and response bodies of the HTTP API (they define its OpenAPI schema).

Coordinates are (x, y) pixels of the original image (EXIF rotation applied, as in
GET /api/images/{id}), boxes are XYXY, masks are COCO RLE with ``size`` = [height, width].
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

MAX_POINTS = 64
MAX_PROPOSAL_POINTS_PER_SIDE = 64

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Point = Annotated[list[Number], Field(min_length=2, max_length=2, description="(x, y) in pixels")]
Box = Annotated[list[Number], Field(min_length=4, max_length=4, description="XYXY in pixels")]


class Closed(BaseModel):
    """Unknown fields are errors, so a misspelt option is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RLE(Closed):
    size: Annotated[list[int], Field(min_length=2, max_length=2, description="[height, width]")]
    counts: str | list[int] = Field(description="compressed COCO string, or run lengths")


ImageState = Literal["not_started", "in_progress", "done", "empty"]


class ImageSummary(BaseModel):
    id: str
    file_name: str
    annotations: int = Field(description="number of accepted annotations")
    state: ImageState = Field("not_started", description="the labeller's progress on the image (kept in the "
                                                         "COCO file's images as segany_state)")


class ImageStateUpdate(Closed):
    state: ImageState


class ImageDetail(BaseModel):
    id: str
    file_name: str
    width: int
    height: int
    embedding: Literal["ready", "computing", "failed", "absent"]


class EmbeddingStatus(BaseModel):
    image_id: str
    status: Literal["ready", "computing", "failed", "absent"]
    error: str | None = None


class PredictRequest(Closed):
    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    labels: list[Literal[0, 1]] = Field(default_factory=list, max_length=MAX_POINTS,
                                        description="1 = foreground, 0 = background, one per point")
    box: Box | None = None
    logits: str | None = Field(None, max_length=64, description="a candidate's logits handle from a previous "
                                                                "prediction on this image, to refine that mask")
    multimask: bool = Field(True, description="3 candidates (whole / part / sub-part) instead of 1")
    formats: list[Literal["rle", "png"]] = Field(default_factory=lambda: ["rle"], min_length=1,
                                                 description="mask encodings to return (png is base64)")

    @model_validator(mode="after")
    def _prompts(self) -> PredictRequest:
        if len(self.points) != len(self.labels):
            raise ValueError(f"points and labels must have the same length, got {len(self.points)} and {len(self.labels)}")
        if not self.points and self.box is None:
            raise ValueError("give at least one point (with its label) or a box")
        return self


class Candidate(BaseModel):
    score: float = Field(description="the model's predicted IoU")
    area: int
    bbox: list[int] = Field(description="XYWH")
    rle: RLE | None = None
    png: str | None = Field(None, description="base64 PNG, 255 inside the mask")
    logits: str = Field(description="handle to pass as `logits` to refine this mask")


class PredictResponse(BaseModel):
    image_id: str
    width: int
    height: int
    candidates: list[Candidate] = Field(description="best first")
    decoder_ms: float = Field(description="prompt encoder + mask decoder + upscaling time")
    total_ms: float = Field(description="time spent in the server for this request (embedding included)")


class EverythingRequest(Closed):
    points_per_side: int = Field(16, ge=1, le=MAX_PROPOSAL_POINTS_PER_SIDE)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    min_mask_region_area: int = Field(0, ge=0)
    fast: bool = Field(False, description="score candidates on the low-res logits: faster, but the kept set "
                                          "may differ slightly from the official generator's")


class Proposal(BaseModel):
    rle: RLE
    area: int
    bbox: list[float]
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]


class EverythingResponse(BaseModel):
    image_id: str
    proposals: list[Proposal]
    total_ms: float


MAX_FIND_TEXT = 500


class FindRequest(Closed):
    text: str = Field(min_length=1, max_length=MAX_FIND_TEXT,
                      description='class names or phrases, e.g. "cat, dog" or "cat. dog."')
    box_threshold: float | None = Field(None, ge=0, le=1, description="minimum detector score (default: the "
                                                                      "server's detector's)")
    text_threshold: float | None = Field(None, ge=0, le=1, description="Grounding DINO: minimum token score "
                                                                       "for a phrase (default: the detector's)")


class FoundProposal(Proposal):
    category: str = Field(description="the class of the text the detector's box matched")
    label: str = Field(description="the detector's own label (Grounding DINO: the phrase of its tokens)")
    detector_score: float
    box: Box = Field(description="the detector's box, XYXY")


class FindResponse(BaseModel):
    image_id: str
    classes: list[str] = Field(description="the class names read from the text")
    proposals: list[FoundProposal] = Field(description="highest detector score first")
    total_ms: float


class AnnotationCreate(Closed):
    category: str = Field(min_length=1, max_length=100)
    rle: RLE
    score: float | None = Field(None, allow_inf_nan=False)


class AnnotationRestore(AnnotationCreate):
    image: str = Field(description="the API's id of the annotation's image")


class AnnotationUpdate(Closed):
    category: str | None = Field(None, min_length=1, max_length=100)
    rle: RLE | None = None

    @model_validator(mode="after")
    def _something(self) -> AnnotationUpdate:
        if self.category is None and self.rle is None:
            raise ValueError("give a new category and/or a new rle")
        return self


class Annotation(BaseModel):
    id: int
    image_id: int = Field(description="the COCO image id (not the API's image id)")
    category_id: int
    category: str
    segmentation: RLE = Field(description="compressed RLE, whatever form the file holds it in")
    area: int | float
    bbox: list[int | float] = Field(description="XYWH")
    iscrowd: int
    score: float | None = None
    polygons: list[list[float]] | None = Field(None, description="the mask's outline as COCO polygons (OpenCV "
                                                                 "contours, simplified), with ?polygons=1")


Color = Annotated[list[int], Field(min_length=3, max_length=3, description="[r, g, b], 0-255")] | str


class Category(BaseModel):
    id: int
    name: str
    supercategory: str = ""
    color: list[int] | None = Field(None, description="[r, g, b] (default: the page picks one from the id)")
    hotkey: int | None = Field(None, description="1-9 for the first nine categories in the project's order")
    annotations: int = Field(0, description="number of annotations with this category")


class CategoryCreate(Closed):
    name: str = Field(min_length=1, max_length=100)
    color: Color | None = Field(None, description='[r, g, b] or "#rrggbb"')


class CategoryUpdate(Closed):
    name: str | None = Field(None, min_length=1, max_length=100, description="a new name (the id stays)")
    color: Color | None = Field(None, description='[r, g, b] or "#rrggbb"')

    @model_validator(mode="after")
    def _something(self) -> CategoryUpdate:
        if self.name is None and self.color is None:
            raise ValueError("give a new name and/or a new color")
        return self


class CategoryMerge(Closed):
    into: int = Field(description="the category id that takes over this category's annotations")


class ServerInfo(BaseModel):
    model: str
    images: int
    annotations_file: str
    cached_embeddings: int
    cached_embedding_bytes: int
    embeddings_computed: int
    embeddings_stored: int = Field(description="images answered from their stored embedding (--embeddings), "
                                               "without the encoder")
    max_body_bytes: int
    detector: str | None = Field(None, description="the text detector of POST /api/images/{id}/find "
                                                   "(segany serve --detector), or null")
    generator_options: list[str] = Field(default_factory=list, description="the 'everything' options this "
                                                                           "model's generator honours")


class BrowserDecoder(BaseModel):
    decoder: str | None = Field(description="URL of the model's ONNX prompt decoder, or null (no browser decoder "
                                            "for this engine)")
    runtime: str | None = Field(description="URL of onnxruntime-web's module (segany serve --web-runtime), or null")
    reason: str | None = Field(None, description="why the page cannot decode in the browser, when it cannot")
