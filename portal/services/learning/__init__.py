"""Learning: what the model learns from and what it does. The training data (datasets), training runs
(training*: when, running, monitoring, sweeping), the promotion gate (gate_rules, promotion), model
artifacts, classification of new images by the production model (classification*) and heat maps."""
