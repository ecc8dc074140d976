"""The prompt replay buffer: hard questions are re-asked until the student solves them alone.

Spec step 11. The buffer holds questions (text, image reference, gold answer), never responses, in
admission order. Only plain rollouts decide membership: a question enters when its plain accuracy is
below tau, leaves ("graduates") when it reaches tau, and the oldest admissions go first when the
buffer is over capacity.
"""
from collections import Counter


class ReplayBuffer:
    def __init__(self, capacity=10_000):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items = {}  # question id -> (example, entry bin); dicts keep insertion (= admission) order
        self.totals = Counter()  # admitted / graduated / evicted since the start of the run
        self.admitted_by_bin = Counter()  # entry accuracy bin ("0/8", "1/8", ...) -> admissions
        self.graduated_by_bin = Counter()  # entry accuracy bin -> graduations

    def __len__(self):
        return len(self._items)

    def __contains__(self, qid):
        return qid in self._items

    def ids(self):
        """Question ids, oldest admission first."""
        return list(self._items)

    def sample(self, k, rng, exclude=()):
        """Up to k buffered questions, uniformly without replacement (ids in `exclude` are not drawn)."""
        pool = [key for key in self._items if key not in exclude]
        keys = rng.sample(pool, min(k, len(pool)))
        return [self._items[key][0] for key in keys]

    def update(self, results, tau):
        """Apply one step's plain results: a list of (example, num_correct, num_rollouts).

        Order as in the spec: admit the new hard ones, graduate the solved ones, then evict FIFO.
        A replayed question that is still hard keeps its original admission position.
        Returns this step's counts.
        """
        step = Counter()
        for example, correct, total in results:
            qid, acc = example["id"], correct / total
            if acc < tau and qid not in self._items:
                entry = f"{correct}/{total}"
                self._items[qid] = (example, entry)
                step["admitted"] += 1
                self.admitted_by_bin[entry] += 1
            elif acc >= tau and qid in self._items:
                _, entry = self._items.pop(qid)
                step["graduated"] += 1
                step[f"graduated_from_{entry}"] += 1
                self.graduated_by_bin[entry] += 1
        while len(self._items) > self.capacity:
            del self._items[next(iter(self._items))]
            step["evicted"] += 1
        for key in ("admitted", "graduated", "evicted"):
            self.totals[key] += step[key]
        return dict(step, admitted=step["admitted"], graduated=step["graduated"], evicted=step["evicted"])

    def state_dict(self):
        return {
            "capacity": self.capacity,
            "items": [[example, entry] for example, entry in self._items.values()],
            "totals": dict(self.totals),
            "admitted_by_bin": dict(self.admitted_by_bin),
            "graduated_by_bin": dict(self.graduated_by_bin),
        }

    def load_state_dict(self, state):
        self.capacity = state["capacity"]
        self._items = {example["id"]: (example, entry) for example, entry in state["items"]}
        self.totals = Counter(state["totals"])
        self.admitted_by_bin = Counter(state["admitted_by_bin"])
        self.graduated_by_bin = Counter(state["graduated_by_bin"])
