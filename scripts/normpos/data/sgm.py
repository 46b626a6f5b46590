"""Segments out of the evaluation files: WMT ``.sgm`` and IWSLT ``.xml`` (newstest2013/2014, IWSLT dev/test).

Mirrors the shell pipeline of fairseq's prepare-iwslt14.sh and prepare-wmt14en2de.sh::

    grep '<seg id' FILE | sed -e 's/<seg id="[0-9]*">\\s*//g' | sed -e 's/\\s*<\\/seg>\\s*//g' | sed -e "s/\\’/\\'/g"

line by line, so the text is the same as the recipe's (e.g. no whitespace collapsing inside a segment,
which is why newstest2014.en hashes differently from the whitespace-normalised copies, see PROVENANCE.md).
The ``’`` -> ``'`` step is the recipe's pre-tokenization fix for the test side; the untokenized
references for sacreBLEU keep the segment text as published (``replace_rsquo=False``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from normpos.data.textfiles import read_lines

# GNU sed's \s in these expressions; spelled out so Python's wider Unicode \s does not change the text.
_WS = r"[ \t\n\r\f\v]"
_SEG_OPEN = re.compile(r'<seg id="[0-9]*">' + _WS + "*")
_SEG_CLOSE = re.compile(_WS + r"*</seg>" + _WS + "*")


def segments(path: Path, replace_rsquo: bool = True) -> Iterator[str]:
    """The text of every ``<seg id`` line of an sgm/xml file, in file order."""
    for line in read_lines(path):
        if "<seg id" not in line:
            continue
        text = _SEG_CLOSE.sub("", _SEG_OPEN.sub("", line))
        yield text.replace("\u2019", "'") if replace_rsquo else text
