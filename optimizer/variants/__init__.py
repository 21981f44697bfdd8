"""Variant generation rules: the meta-prompt sent to the LLM, parsing its reply, validating
the proposed prompts (pure) and storing candidates with their lineage (store). Running a
generation is the variant_generation job's (optimizer/jobs/variant_generation.py)."""
