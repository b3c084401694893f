"""The workflowd benchmark: `python -m bench` (see `bench/__main__.py` and README "Benchmark").

It measures the "Performance" bars of DESIGN.md side by side with a bare aiohttp handler, a
plain asyncio reference and, with `--peers`, DBOS and LangGraph, all in one run on one machine.
"""
