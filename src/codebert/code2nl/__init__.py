"""Code-to-documentation generation (paper §4.3, Tables 5-6): data, the encoder-decoder, beam search, the stage."""
