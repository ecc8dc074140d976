"""train.py with the forced parity reward of the tests (mixed groups from a random model), for runs in
subprocesses such as the multi-process tests. With ZPPO_COUNT_PASSES=FOLDER every rank writes, at exit,
FOLDER/rank{N}.json with the number of trainer passes (zppo's calls of logprobs.response_logprobs: the
log-prob forwards and the update's forward + backward passes) it ran: under FSDP every one of them runs
collectives, so every rank must have run the same number. With ZPPO_SIGNAL=PHASE:STEP:NAME[,...] the process
sends itself the signal NAME (a real one, through the kernel) when it enters PHASE ("rollout":
train.sample_and_score, "update": train.update, "eval": the periodic evaluation) at step STEP, on rank
ZPPO_SIGNAL_RANK (default every rank): how a scheduler's signal reaches a run at that moment."""
import json
import os
import signal
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
    plan = [item.split(":") for item in os.environ.get("ZPPO_SIGNAL", "").split(",") if item]
    rank_ok = os.environ.get("ZPPO_SIGNAL_RANK") in (None, os.environ.get("RANK", "0"))
    step = [0]

    def at(phase, function, steps_itself=False):
        def wrapped(*args, **kwargs):
            if steps_itself:
                step[0] = args[3] if len(args) > 3 else kwargs["step"]
            for item in plan:
                p, s, name = item[:3]
                if p == phase and int(s) == step[0] and rank_ok and len(item) == 3:
                    item.append("sent")  # once: a phase may run more than once in a step
                    os.kill(os.getpid(), getattr(signal, name))
            return function(*args, **kwargs)
        return wrapped

    if plan:
        train.update = at("update", train.update, steps_itself=True)
        real_sample_groups = train.sample_groups

        def sample_groups(cfg, run):  # the step about to be sampled
            step[0] += 1
            return real_sample_groups(cfg, run)

        train.sample_groups = sample_groups
        train.sample_and_score = at("rollout", train.sample_and_score)
        train.evaluate = at("eval", train.evaluate)
    try:
        train.main(train.parse_config(sys.argv[1:]))
    finally:
        if folder:
            with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
                json.dump({"passes": passes[0]}, f)
