"""Natural-language code search (paper §4.1): data, the MRR protocol, models, fine-tuning, baselines."""
