"""Ingestion: how an SEM image gets in. The one path (`ingest.ingest_file` and its steps), the checks
an untrusted file passes (validation*, decoded in a capped child: decode_guard), the instrument metadata
(metadata*), near-duplicates and the train/test split, and the callers that feed it besides the web and
the API: folder import, recovery of killed uploads and the watch folders (watch*)."""
