"""Loopback fakes of the vendors' wire APIs (aiohttp servers on 127.0.0.1), used by the tests."""
