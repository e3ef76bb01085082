"""Teachers and their cache: the protocol, TRIBE v2 (isolated environment), a deterministic stand-in,
the chunked teacher job, diversity sampling of what to run it on, and import of existing predictions."""
