"""The tuned plan as searches read it (the core's rule, the same for every engine)."""

from __future__ import annotations

from types import SimpleNamespace

from mrlkit.funnel import Funnel
from mrlkit.stores.tune import Tuned, chosen

RULE = (Funnel.exact(384), "the rule")


def _rec(rows: int) -> SimpleNamespace:
    tried = [{"funnel": "64:float32:50,384:float32", "recall": 0.96, "p50_ms": 1.0},
             {"funnel": "384:float32:10", "recall": 1.0, "p50_ms": 9.0}]
    plan = Tuned("64:float32:50,384:float32", 0.96, 0.94, 0.98, 1.0, "native", 0.95, 10,
                 200, "documents", rows, tried)
    return SimpleNamespace(plan=plan.to_json(), stored_dim=384, name="s")


def test_a_plan_keeps_its_recall_as_the_set_grows_by_taking_candidates_in_proportion():
    funnel, why = chosen(_rec(200_000), 200_000, 10, None, RULE)
    assert str(funnel) == "64:float32:50,384:float32" and "added since" not in why
    # 320,000 rows under a plan measured at 200,000: 50 × 1.6 candidates, said why
    funnel, why = chosen(_rec(200_000), 320_000, 10, None, RULE)
    assert str(funnel) == "64:float32:80,384:float32"
    assert "candidates ×1.60 for the rows added since" in why
    # fewer rows than measured: never fewer candidates; more hits: in proportion to k
    assert str(chosen(_rec(200_000), 150_000, 10, None, RULE)[0]) == \
        "64:float32:50,384:float32"
    assert str(chosen(_rec(200_000), 300_000, 20, None, RULE)[0]) == \
        "64:float32:150,384:float32"
    # doubled: stale, the rule serves until the set is tuned again
    assert chosen(_rec(200_000), 400_001, 10, None, RULE)[0] == RULE[0]
    # a damaged plan that says it was measured on no rows: searched, never a crash
    assert str(chosen(_rec(0), 2, 10, None, RULE)[0]) == "64:float32:100,384:float32"
