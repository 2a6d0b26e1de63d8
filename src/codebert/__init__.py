"""codebert: the CodeBERT paper (Feng et al., 2020) end to end, and a code-search tool built on it."""

__version__ = "0.1.0"
