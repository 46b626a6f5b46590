"""The one exception type of scoring: a bad or missing input the user can act on, reported as one line."""


class ScoringError(Exception):
    """What is wrong and what to do, as a single line (the command line prints ``normpos: error: ...``)."""

    def __init__(self, message: str):
        # One line even when a caller interpolates a multi-line library message (fairseq's stderr tail).
        super().__init__(" ".join(str(message).split()))
