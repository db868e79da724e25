"""The fixtures leave no state behind for tests that did not ask for it."""

import os

OUTSIDE = os.environ.get("PLANO_HOME")


def test_a_test_that_asks_gets_the_session_plano_home(plano_home):
    assert os.environ["PLANO_HOME"] == plano_home != OUTSIDE


def test_a_test_that_does_not_ask_keeps_the_callers_plano_home():
    assert os.environ.get("PLANO_HOME") == OUTSIDE
