"""``python -m metaclip_tasks.train_entry ARGS``: open_clip's trainer with this package's model configs."""

import sys

from metaclip_tasks.train import register_model_configs

if __name__ == "__main__":
    register_model_configs()
    from open_clip_train.main import main

    main(sys.argv[1:])
