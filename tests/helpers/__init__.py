"""Test-only callbacks that a run loads with `+callbacks.<key>._target_=helpers.<module>.<Class>`
(subprocesses get the tests directory on PYTHONPATH)."""
