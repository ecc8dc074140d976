"""train.py with the forced parity reward of the tests (mixed groups from a random model), for runs in
subprocesses such as the two-process test."""
import sys

import reward
import train
from test_train import parity_grade

if __name__ == "__main__":
    reward.grade = parity_grade
    train.main(train.parse_config(sys.argv[1:]))
