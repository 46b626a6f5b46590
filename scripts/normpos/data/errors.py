"""The one exception type of the data layer: a bad input the user can act on."""


class DataError(Exception):
    """A problem with the inputs (missing source, wrong checksum, misaligned corpus, ...).

    The message is a single line that says what is wrong and what to do; the command line prints it as
    ``error: <message>`` and exits non-zero, without a traceback, because it is not a bug in the code.
    """

    def __init__(self, message: str):
        # Keep it one line even when a caller interpolates a multi-line library message.
        super().__init__(" ".join(str(message).split()))
