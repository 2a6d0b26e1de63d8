"""Whole runs of the pipeline: the paper's reproduction and its report, the quickstart, learning-curve plots."""
