"""Which prompt wins each detection: the box exemplar or phrase of the detection's class whose
embedding is closest to the detected box's class embedding.

Under the "max" combine mode that row is exactly the one that gave the detection its score (a
class scores a candidate by its best-matching positive row); under "fused" the class scores
with one prototype, and the closest row says which of its boxes and phrases the detection
resembles most. The studio's box diagnostics count these per box and per phrase, so a person
sees which words and which boxes find things.
"""

from __future__ import annotations

import torch

from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars
from owl_core.engine.scoring import DetectionResult
from owl_core.geometry import square_to_pixels_tensor


def winning_rows(emb: ImageEmbeddings, result: DetectionResult,
                 exemplars: Exemplars) -> list[int]:
    """For each detection of `result` (made from `emb` with `exemplars`), the index of the
    positive row of its class in `exemplars` closest to the detected box's class embedding;
    -1 where the class has no positive row here.

    The detected box is found among the image's candidates by its pixel box (a detection is
    one candidate's box clipped to the image, so the nearest candidate is itself)."""
    n = len(result)
    if n == 0 or len(exemplars) == 0 or emb.num_boxes == 0:
        return [-1] * n
    pixels = square_to_pixels_tensor(emb.boxes.float().cpu(), emb.image_size).float()
    detected = torch.as_tensor(result.xyxy, dtype=torch.float32).reshape(-1, 4)
    candidates = torch.cdist(detected, pixels).argmin(1)
    feats = emb.class_embeds[candidates.to(emb.class_embeds.device)].float().cpu()
    sims = feats @ exemplars.embeds.float().cpu().T  # (N, R)
    index = {name: i for i, name in enumerate(exemplars.class_names)}
    row_class = exemplars.class_ids.cpu()
    positive = ~exemplars.negative.cpu()
    out = []
    for i, cid in enumerate(result.class_id.tolist()):
        cls = index.get(result.class_names[cid], -1)
        mask = positive & (row_class == cls)
        if not bool(mask.any()):
            out.append(-1)
            continue
        out.append(int(torch.where(mask, sims[i], torch.full_like(sims[i], float("-inf")))
                       .argmax()))
    return out
