"""The image side: download with img2dataset, training with open_clip (balanced online in the loader,
paper A.2), zero-shot and retrieval evaluation."""
