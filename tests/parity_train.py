"""train.py with the forced parity reward of the tests (mixed groups from a random model), for runs in
subprocesses such as the multi-process tests. With ZPPO_COUNT_PASSES=FOLDER every rank writes, at exit,
FOLDER/rank{N}.json with the number of trainer passes (zppo's calls of logprobs.response_logprobs: the
log-prob forwards and the update's forward + backward passes) it ran: under FSDP every one of them runs
collectives, so every rank must have run the same number."""
import json
import os
import sys

import reward
import train
import zppo
from test_train import parity_grade

if __name__ == "__main__":
    reward.grade = parity_grade
    folder, passes = os.environ.get("ZPPO_COUNT_PASSES"), [0]
    if folder:
        counted = zppo.response_logprobs

        def counting(*args, **kwargs):
            passes[0] += 1
            return counted(*args, **kwargs)

        zppo.response_logprobs = counting
    try:
        train.main(train.parse_config(sys.argv[1:]))
    finally:
        if folder:
            with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
                json.dump({"passes": passes[0]}, f)
