"""The bounded tables of the caches: never past their bound, evicting what was remembered
longest ago, a name remembered again counted as new (issue 23: a full key cache was cleared
whole, so 100,000 active keys made every process look every key up again)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.bounded import remember


def test_the_oldest_goes_first_and_a_refresh_moves_to_the_end() -> None:
    table: dict[str, int] = {}
    for name in "abc":
        remember(table, name, 1, limit=3)
    remember(table, "a", 2, limit=3)  # refreshed: now the newest
    remember(table, "d", 1, limit=3)
    assert list(table) == ["c", "a", "d"] and table["a"] == 2


@given(st.lists(st.text(max_size=3), max_size=300), st.integers(1, 20))
def test_never_past_the_bound_and_the_newest_kept(names: list[str], limit: int) -> None:
    table: dict[str, int] = {}
    for i, name in enumerate(names):
        remember(table, name, i, limit)
        assert len(table) <= limit and table[name] == i
    recent = list(dict.fromkeys(reversed(names)))[:limit]
    assert set(recent) == set(table)
