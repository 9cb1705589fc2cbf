"""The paper's algorithm: sub-string matching of alt-texts against the metadata (section 3.2),
per-entry counting (3.3), t and balancing (3.4-3.5) and the figures that report them."""
