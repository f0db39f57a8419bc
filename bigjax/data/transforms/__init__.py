"""Per-record Grain transforms, one module per modality (`image`, `text`)."""
