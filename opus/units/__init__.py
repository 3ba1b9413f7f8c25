"""The shipped science definitions' implementations (AMPEL-style tiers on ZTF alerts,
gammapy analyses on H.E.S.S. DL3 data): Python callables run in a job's own process.

A unit knows nothing of the server: it takes its typed parameters, input and result file
names as keywords, works in the job's folder, and says what provenance cannot see from
outside (reference files it read, which output came from which input, counts it
dropped) through `opus.units.manifest`."""
