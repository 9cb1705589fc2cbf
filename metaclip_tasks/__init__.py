"""MetaCLIP curation (Xu et al., ICLR 2024) as a library: matching, counting, balancing and more."""

__version__ = "0.1.0"
