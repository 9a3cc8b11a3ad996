"""Fuzzing: property-based tests of every parser (`test_parsers.py`, in `make test`) and a live mutation fuzzer
against a real server (`live.py`: `make fuzz` runs a million inputs, `make test` a short run)."""
