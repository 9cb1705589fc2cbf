"""The one exception type for bad input: its message names the file, column or value at fault."""


class CurationError(ValueError):
    """Input the pipeline refuses (missing file, wrong column, bad metadata, bad parameter)."""
