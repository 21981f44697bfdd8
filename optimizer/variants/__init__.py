"""Variant generation: ask the LLM for improved versions of a prompt and store them as
candidates with their lineage. Pure parts (meta_prompt, parse, validate) and I/O parts
(store, generate) are kept apart."""
