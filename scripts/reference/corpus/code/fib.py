#!/usr/bin/env python3
"""Fibonacci numbers, three ways."""
from functools import lru_cache


@lru_cache(maxsize=None)
def fib(n: int) -> int:
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def fib_iter(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
    print([fib(i) for i in range(20)], f"{fib_iter(90):,}")
	# a tab-indented comment
    assert fib(10) == fib_iter(10) == 55, 'mismatch'
