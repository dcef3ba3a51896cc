"""`cai review`: read a run in the browser and correct it before publishing (decisions in RUN/review.jsonl).

query      filtered pages of rows and one row in full, read lazily with polars
decisions  a person's decisions, and how `cai publish` applies them
server     the local web server (standard library) and its safety rules; the page is in static/
"""
