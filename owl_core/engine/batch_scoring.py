"""Score many stored images at once: the similarity products batched over images.

Same rules and the same arithmetic as `owl_core.engine.scoring.detect`: one product per (class,
sign) with exactly that group's exemplars (so near-ties round, and break in NMS, as there), here
batched over a chunk of images; then `scoring.positive_and_negative_scores` on the whole chunk
and `scoring.select_detections` (thresholds, padding boxes, NMS with negatives, the cut) per
image. Re-labelling a stored dataset so costs a few matrix products per chunk, not a Python
round trip of small products per image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from owl_core.engine.embedding_store import StoredBatch
from owl_core.engine.matching import Exemplars, combine_exemplars
from owl_core.engine.scoring import DetectionResult, positive_and_negative_scores, select_detections
from owl_core.params import DetectParams

#: Images per batched product: (16, 300, 512) fp32 is 10 MB, read once per exemplar group,
#: so it should stay in cache between the groups' products.
CHUNK_IMAGES = 16


def batch_similarities(class_embeds: torch.Tensor,
                       exemplars: Exemplars) -> tuple[torch.Tensor, torch.Tensor]:
    """Best cosine similarity of each candidate to each class's positives and negatives.

    Args:
        class_embeds: (n, K, D) candidates' class embeddings of n images.
        exemplars: (E, D) exemplars of C classes.

    Returns:
        Two (n, K, C) float32 tensors, -inf where the class has no such exemplar (as
        `scoring.class_similarities`, image by image).
    """
    n, k, _ = class_embeds.shape
    num_classes = len(exemplars.class_names)
    best = torch.full((2, num_classes, n, k), float("-inf"))
    if num_classes and len(exemplars):
        embeds = exemplars.embeds.cpu().float()
        image_t = class_embeds.float().transpose(1, 2)  # (n, D, K)
        groups: dict[tuple[int, int], list[int]] = {}
        for row, (cls, negative) in enumerate(zip(exemplars.class_ids.tolist(),
                                                  exemplars.negative.tolist(), strict=True)):
            groups.setdefault((int(negative), cls), []).append(row)
        for (negative, cls), rows in groups.items():
            best[negative, cls] = torch.matmul(embeds[rows], image_t).amax(1)  # (n, K)
    return (best[0].permute(1, 2, 0).contiguous(), best[1].permute(1, 2, 0).contiguous())


def score_batch(batch: StoredBatch, exemplars: Exemplars, params: DetectParams,
                chunk: int = CHUNK_IMAGES) -> list[DetectionResult]:
    """Detections for every row of `batch`, in row order.

    Args:
        batch: stored rows; boxes (N, K, 4) cxcywh in the padded square.
        exemplars: the prompt set (class names, (E, D) exemplar and phrase embeddings).
        params: thresholds, score mode, combine mode.
        chunk: images per batched product (bounds memory).

    Returns:
        N `DetectionResult` in original-image pixels (XYXY, clipped).
    """
    exemplars = combine_exemplars(exemplars, params.combine)
    names = exemplars.class_names
    sizes = [(int(w), int(h)) for w, h in batch.image_size.tolist()]
    if not names or len(exemplars) == 0 or params.max_detections == 0:
        return [DetectionResult.empty(names, size) for size in sizes]
    with one_thread():
        return _score(batch, exemplars, params, chunk, sizes)


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for the calling thread while inside: these ops are small (~1e5
    elements), and OpenMP's fork/join otherwise waits for a second core that a busy machine
    may not give (measured 10x slower under load on the 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _score(batch: StoredBatch, exemplars: Exemplars, params: DetectParams, chunk: int,
           sizes: list[tuple[int, int]]) -> list[DetectionResult]:
    names = exemplars.class_names
    results: list[DetectionResult] = []
    for start in range(0, len(batch), max(1, chunk)):
        stop = min(len(batch), start + chunk)
        best_pos, best_neg = batch_similarities(batch.class_embeds[start:stop], exemplars)
        pos_scores, neg_scores = positive_and_negative_scores(
            best_pos, best_neg, batch.logit_shift[start:stop], batch.logit_scale[start:stop],
            params.score_mode)
        # images without a single positive candidate are empty whatever NMS does: skip them
        # (select_detections would return the same empty result, one Python call later)
        has_any = ((pos_scores >= params.confidence) & (pos_scores > 0)).flatten(1).any(1)
        for i, any_candidate in enumerate(has_any.tolist()):
            if not any_candidate:
                results.append(DetectionResult.empty(names, sizes[start + i]))
                continue
            results.append(select_detections(batch.boxes[start + i], pos_scores[i],
                                             neg_scores[i], names, sizes[start + i], params))
    return results
