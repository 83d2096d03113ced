"""Curation: the lab's side of the labels. Curated labels (labels), the review queue and its orders
(review, review_order), and similar curated images (similar)."""
