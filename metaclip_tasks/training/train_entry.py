"""``python -m metaclip_tasks.training.train_entry ARGS``: open_clip's trainer with this package's model configs
and, given ``--metaclip-balance-rule``, balancing in its loader (:mod:`metaclip_tasks.training.online`)."""

import sys

from metaclip_tasks.training.online import LOG_FLAG, RULE_FLAG, install, split_flags
from metaclip_tasks.training.train import register_model_configs

if __name__ == "__main__":
    register_model_configs()
    ours, args = split_flags(sys.argv[1:])
    if RULE_FLAG in ours:
        install(ours[RULE_FLAG], ours.get(LOG_FLAG))
    from open_clip_train.main import main

    main(args)
