"""The session's secrets watch can see a leak (so its silence means something)."""

from __future__ import annotations

import logging

from tests.secrets_watch import Watch


def test_the_watch_sees_a_planted_secret(secrets_watch: Watch) -> None:
    planted = Watch()
    planted.secrets.add("sk_gw_k0000000_planted")
    planted.texts.append('{"msg": "oops sk_gw_k0000000_planted"}')
    assert planted.leaks()
    before = len(secrets_watch.texts)
    logging.getLogger("gateway.test").warning("a line the watch must keep")
    assert len(secrets_watch.texts) == before + 1
