"""The run's data: the constitution and its rules, prompts, records, row types, the run folder and its context."""
