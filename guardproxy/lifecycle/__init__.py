"""The policy lifecycle: write a policy, try it on recorded traffic (replay.py) or labelled data
(evaluate.py) without enforcing it, then turn it on.

labelled set ─► datasets.py ─► Example ─┐
audit trail ──► replay.py ─► stored exchange ─┼─► judge.py: the tenant's policy on its real guard
                                              │    (verdicts cached on disk: verdicts.py)
                                              └─► scores.py / report.py · the decision diff
"""
