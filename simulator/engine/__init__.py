"""The engine: config, scenario, design, assignment, pipeline, runtime, story, store, oracle, run."""
