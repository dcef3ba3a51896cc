"""`cai serve`: the constitution as a reward service for distributed RL trainers (OpenRLHF, verl, TRL).

scorer   what one item's reward is made of: the rules (the reference from the request), a PM and a PRM
batcher  dynamic batching of the trained models across concurrent requests (a small deadline)
app      the ASGI app (FastAPI): endpoints, auth, limits, the bounded queue, metrics
"""
