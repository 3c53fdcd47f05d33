"""Upstreams: the pooled client and its priority walk, the aiohttp transport under httpx, and the back-off health
of each upstream; the kinds of IP addresses (addresses.py) that the guards refuse."""
