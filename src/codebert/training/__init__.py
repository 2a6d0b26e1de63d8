"""Training machinery that knows nothing about CodeBERT: the loop (exact resume, DDP), length-bucketed batches, the stage skeleton."""
