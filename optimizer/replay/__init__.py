"""Replay and the pairwise judge: a candidate and the active version answer the same logged
conversations, a judge compares the answers in both orders, and a gate lets only candidates
that win where the active version failed (and do not lose elsewhere) go live.

sampling   which conversations are replayed (SQL)
requests   the replay and judge requests (pure)
verdict    reading the judge's reply (pure)
evaluate   replaying one conversation under both prompts and judging it (LLM calls)
gate       which candidates pass, best first, and why the others do not (pure)
store      evaluation rows, reused control answers, rejected versions (SQL)

Running a replay is the candidate_replay job's (optimizer/jobs/candidate_replay.py)."""
