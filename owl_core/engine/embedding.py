"""Per-image OWLv2 outputs: the one expensive step, computed once and cached by content.

`ImageEmbeddings` is an immutable record replaced as a whole, never patched in place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from owl_core.engine.loading import OwlModel

_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ImageEmbeddings:
    """One image's detection-relevant outputs, top-K patches by objectness.

    Attributes:
        objectness: (K,) objectness probability (sigmoid), sorted descending.
        boxes: (K, 4) cxcywh boxes normalised to the padded square.
        class_embeds: (K, D) L2-normalised class embeddings.
        logit_shift: (K,) the class head's per-box logit shift.
        logit_scale: (K,) the class head's per-box logit scale (elu + 1).
        patch_boxes: (P, 4) cxcywh boxes of ALL patches, for matching drawn boxes; None for
            embeddings imported from a `.pt` (which only carries the top K).
        topk_index: (K,) index of each top-K row among the P patches (None when imported).
        patch_class_embeds: (P, D) class embeddings of all patches; only kept for images that
            serve as examples (a drawn box may snap to a patch outside the top K).
        image_size: (width, height) of the original image in pixels.
    """

    objectness: torch.Tensor
    boxes: torch.Tensor
    class_embeds: torch.Tensor
    logit_shift: torch.Tensor
    logit_scale: torch.Tensor
    image_size: tuple[int, int]
    patch_boxes: torch.Tensor | None = None
    topk_index: torch.Tensor | None = None
    patch_class_embeds: torch.Tensor | None = None

    _TENSORS = ("objectness", "boxes", "class_embeds", "logit_shift", "logit_scale",
                "patch_boxes", "topk_index", "patch_class_embeds")

    @property
    def num_boxes(self) -> int:
        return int(self.objectness.shape[0])

    @property
    def has_patches(self) -> bool:
        return self.patch_class_embeds is not None

    def nbytes(self) -> int:
        """Bytes held by the tensors (what the cache budgets)."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._TENSORS
                if getattr(self, name) is not None}

    def to(self, device: torch.device | str) -> ImageEmbeddings:
        moved = {name: t.to(device) for name, t in self._tensors().items()}
        return replace(self, **moved)

    def top_k_only(self) -> ImageEmbeddings:
        """Only the top-K rows, as Roboflow Inference keeps them: drawn boxes then snap among
        these alone (its matching), and a matched index is a row of `class_embeds`."""
        return replace(self, patch_boxes=None, topk_index=None, patch_class_embeds=None)

    def without_patches(self) -> ImageEmbeddings:
        """The query-only form: drops the (P, D) patch embeddings."""
        return replace(self, patch_class_embeds=None)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: t.cpu() for name, t in self._tensors().items()}
        state["image_size"] = list(self.image_size)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImageEmbeddings:
        fields = {name: state.get(name) for name in cls._TENSORS}
        for name, value in fields.items():
            if value is not None and not isinstance(value, torch.Tensor):
                raise ValueError(f"embedding state field {name!r} is not a tensor")
        width, height = (int(v) for v in state["image_size"])
        return cls(image_size=(width, height), **fields)

    def reference_tuple(self) -> tuple[torch.Tensor, ...]:
        """The 5-tuple that Roboflow's `SerializedOwlV2` keeps per image."""
        return (self.objectness, self.boxes, self.class_embeds, self.logit_shift,
                self.logit_scale)

    def class_embed_for_patch(self, patch: int) -> torch.Tensor | None:
        """(D,) class embedding of patch `patch` (an index among all P patches), or None when
        it is outside the top K and the patch embeddings were not kept."""
        if self.patch_class_embeds is not None:
            return self.patch_class_embeds[patch]
        if self.topk_index is None:
            return None
        hit = (self.topk_index == patch).nonzero()
        return self.class_embeds[int(hit[0, 0])] if len(hit) else None


def compute_embeddings(
    owl: OwlModel,
    pixel_values: torch.Tensor,
    image_sizes: list[tuple[int, int]],
    top_k: int,
    keep_patches: list[bool] | bool = False,
) -> list[ImageEmbeddings]:
    """Run the vision tower once on a batch and derive every head the detector needs.

    Args:
        owl: the loaded model.
        pixel_values: (B, 3, S, S) float32 model input.
        image_sizes: B (width, height) of the original images.
        top_k: rows kept per image, clamped to the number of patches.
        keep_patches: keep the (P, D) class embeddings of all patches (example images).

    Returns:
        B `ImageEmbeddings`, on the model's device, float32.
    """
    model = owl.model
    if isinstance(keep_patches, bool):
        keep_patches = [keep_patches] * len(image_sizes)
    feature_map = owl.image_embedder(pixel_values.to(owl.device))[0]
    with torch.inference_mode():
        feature_map = feature_map.float()
        batch, grid_h, grid_w, width = feature_map.shape
        image_feats = feature_map.reshape(batch, grid_h * grid_w, width)
        objectness = model.objectness_predictor(image_feats).sigmoid()
        boxes = model.box_predictor(image_feats, feature_map=feature_map)
        k = max(1, min(top_k, grid_h * grid_w))
        top = objectness.topk(k, dim=-1).indices  # sorted by objectness, descending
        results = []
        for i, size in enumerate(image_sizes):
            idx = top[i]
            # class head on the top-K rows only, unless all patches are kept (example images):
            # a query image needs 300 of 3600 rows (the full (P, 512) dense0 costs ~30 ms)
            feats = image_feats[i] if keep_patches[i] else image_feats[i, idx]
            class_embeds, logit_shift, logit_scale = _class_outputs(model, feats)
            patch_class_embeds = None
            if keep_patches[i]:
                patch_class_embeds = class_embeds
                class_embeds, logit_shift, logit_scale = (
                    class_embeds[idx], logit_shift[idx], logit_scale[idx])
            results.append(ImageEmbeddings(
                objectness=objectness[i, idx].contiguous(),
                boxes=boxes[i, idx].contiguous(),
                class_embeds=class_embeds,
                logit_shift=logit_shift,
                logit_scale=logit_scale,
                image_size=(int(size[0]), int(size[1])),
                patch_boxes=boxes[i].clone(),  # clone: a view would pin the batch
                topk_index=idx.clone(),  # a row view would pin the (B, K) index tensor
                patch_class_embeds=patch_class_embeds,
            ))
        return results


def _class_outputs(model: Any, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, C) image features -> L2-normalised class embeddings (N, D), logit_shift (N,) and
    logit_scale (N,) (elu + 1), each in its own storage."""
    head = model.class_head
    class_embeds = head.dense0(feats)
    class_embeds = class_embeds / (torch.linalg.norm(class_embeds, dim=-1, keepdim=True)
                                   + _NORM_EPS)
    logit_shift = head.logit_shift(feats)[..., 0].contiguous()
    logit_scale = (head.elu(head.logit_scale(feats)) + 1)[..., 0].contiguous()
    return class_embeds, logit_shift, logit_scale
