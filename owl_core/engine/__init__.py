"""The detection engine: load OWLv2, embed each image once (cached by content), match drawn
boxes to exemplars, score every patch against them, and read / write `.pt` prompt files.

Data flow: image -> `embedding` (cached by `cache` / `embedding_store`) -> `matching`
(exemplars) -> `scoring` (detections); `predictor.OwlPredictor` ties them together.
Imports only the foundation modules of `owl_core` (never `project`, `batch`, `cli`, `rest`).
"""
