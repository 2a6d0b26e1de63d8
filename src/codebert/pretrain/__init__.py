"""Pre-training (paper §3): the tokenizer, the n-gram generators, the MLM and RTD objectives, the model with its heads, the stage."""
