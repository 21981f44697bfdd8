"""How much of the conversations' text pattern analysis reads. Pure constants, shared by the
SQL that fetches the transcripts (aggregate) and the insight that describes them (describe)."""

TRANSCRIPT_SAMPLE = 2000  # most recent transcripts per side (failed, successful)
TRANSCRIPT_CHARS = 2000  # each cut in SQL, so a huge one never travels whole
