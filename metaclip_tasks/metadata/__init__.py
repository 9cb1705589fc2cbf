"""Metadata sources (paper section 3.1): one module per source, each yielding entries."""
