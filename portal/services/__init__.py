"""The business logic, grouped by domain: ingestion (how an image gets in), curation (labels and the
review queue), learning (training, the promotion gate, classification) and delivery (queueing, the
sweep, webhooks, tokens, the file cache). Web views, API views, management commands and worker tasks are
thin callers of these modules."""
