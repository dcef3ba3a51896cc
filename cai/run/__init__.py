"""The run lifecycle: check everything, start the engine, run the stages through an executor, write the folder."""
