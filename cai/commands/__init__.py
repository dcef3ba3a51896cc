"""The library functions behind the commands: evaluation, judge data, publish, review, score, serve, stats."""
