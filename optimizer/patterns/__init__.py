"""Pattern analysis: where the active prompt does badly, with evidence.

significance  a group against the rest with users as the observations (delta method,
              effective-df t test) and Benjamini-Hochberg (numpy/scipy only)
segments      the tests of one run, the false-discovery control and the actionability rules
themes        words and bigrams that mark failed transcripts (log-odds, Dirichlet prior)
fingerprints  the stable names under which a finding is stored and found again
describe      titles, details and evidence of findings (pure)
aggregate     the SQL side: sums over users per segment and tag (read from the rollup),
              transcript samples, sample ids
rollup        per (version, hour, unit) sums, also per segment and tag, added by a pass
              over the conversations stored since the previous one
tags_sql      tags unnested in SQL on both databases, each once per conversation
store         insert-or-update of insights, and what chaining needs to know
views         insights as the admin API and the CLI list them
llm_themes    optional failure themes named by the LLM, parsed strictly
"""
