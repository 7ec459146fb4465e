"""Benchmarks (`make bench`): each module prints its figures; none of them fails on a slow machine."""
