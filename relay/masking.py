from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any


KEY_BLOCK_BEGIN_RE = r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
KEY_BLOCK_END_RE = r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# A line within a private key block: base64 of some length, whatever precedes it (a BuildKit step's `#7 0.312 `, a
# timestamp), its last line (padded, or alone on its line), or one of the PEM headers (an encrypted key's). A block
# hides at most KEY_BLOCK_LINES of them.
KEY_MATERIAL_RE = (
    r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/=]{16,}+|={1,2}\s*+$|^\s*+[A-Za-z0-9+/=]++\s*+$|\b(?:Proc-Type|DEK-Info|Comment):"
)
KEY_BLOCK_LINES = 200  # an RSA key of 8,192 bits is about 100 lines of base64
MASKED = "[masked]"
MASK_WINDOW = 512  # of a text from a build, what is cleaned and masked: past it nothing is shown (200 of a line)
SECRET_MIN = 6  # a known secret shorter than this is not looked for (it would mask ordinary words)
UNMISTAKABLE_MIN = 16  # a known secret this long is masked in every field of a body, whatever the field means
SUBSTITUTED_MAX = 20  # of a build's secret substitutions, how many are masked
PIECE_MIN = 8  # a part of a known secret this long, at a line's edge, is masked (a secret split across two lines)
CUT_DROPPED = 100  # of a word a window cuts, how much is dropped (more than any credential shape needs to be seen)
# What a credential looks like, as secret scanners (gitleaks, GitHub's secret scanning) describe each kind; a
# match is masked before any text leaves Google Cloud. Every shape is linear in its text: each unbounded run either
# ends the match or starts only where a run of its characters starts (a lookbehind), so no text makes the engine
# scan it again from each position. Kept as text: `re` compiles each on first use, so `import main` stays cheap.
TOKEN_SHAPES = (  # masked whole, in one pass a text
    r"\bATATT[A-Za-z0-9_=+/-]{16,}+",  # Atlassian API token
    r"\bATCTT[A-Za-z0-9_=+/-]{16,}+",  # Bitbucket repository, project and workspace access tokens
    r"\bATBB[A-Za-z0-9]{16,}+",  # Bitbucket app password
    r"\b[MNO][A-Za-z0-9+/]{42,43}=?(?![A-Za-z0-9+/])",  # Bitbucket Data Center HTTP access token (base64)
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}+|github_pat_[A-Za-z0-9_]{22,}+)",  # GitHub
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ID
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key
    r"\bya29\.[0-9A-Za-z_.-]{10,}+",  # Google OAuth access token
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}+",  # Slack
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+",  # a JSON Web Token
    # a private key within one text (an escaped PEM in JSON, a test's message), to its end or the text's
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:(?!-----END ).)*+"
    r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
)
# One pass: a position that cannot start any of them is passed over at once.
TOKEN_SHAPE = "(?=[AMNOgyxe-])(?:" + "|".join(f"(?:{shape})" for shape in TOKEN_SHAPES) + ")"
# The words that make a name a secret's (API_KEY, "password", --token), and a URL's parameter's (?key=, &sig=).
SECRET_WORDS = r"(?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|(?<![a-z])auth(?![a-z]))"  # noqa: S105
PARAMETER_WORDS = r"(?i:password|passwd|secret|token|key|sig|credential|auth)"
# A name holding one, not a file's name before its line (src/token.c:42): linear, tried only where a name starts.
SECRET_NAME = rf"(?<![\w.-])(?![\w.-]*\.[A-Za-z]\w{{0,9}}:\d)(?=[\w.-]*?{SECRET_WORDS})[\w.-]++"
ASSIGNED = r"(?:=|:(?!:))"  # `name=` or `name:`, never a pytest node's `path::test`
# The shapes of which only a part is masked: what follows the group `keep`. Each row is tried only on a text its gate
# is found in: most lines hold none, and none is matched for nothing.
VALUE_SHAPES = (  # (gate, shape)
    (r"(?i)bearer", r"(?P<keep>(?i:\bbearer)\s++)[A-Za-z0-9._~+/=-]{8,}+"),
    (
        r"(?i)authori[sz]ation",
        r"(?i)(?P<keep>\b(?:proxy-)?authori[sz]ation[\"']?\s*+[:=]\s*+[\"']?"
        r"(?:(?:basic|bearer|digest|token|negotiate)\s++)?)[^\s\"',;]{4,}+",
    ),  # Authorization: Basic dXNlcjpwYXNz
    (r"(?i)cookie", r"(?i)(?P<keep>\b(?:set-)?cookie[\"']?\s*+:\s*+[\"']?)[^\"'\r\n]{4,}+"),  # Cookie: ...; the rest
    ("://", r"(?P<keep>(?<=://))(?!git@)[^\s/?#\"']+(?=@)"),  # user info in a URL: user:password@, TOKEN@, p@ss@
    ("=", rf"(?P<keep>[?&;#](?=[\w.-]*?{PARAMETER_WORDS})[\w.-]++=)[^&#\s\"'<>]++"),  # ?access_token=, ?key=, ?sig=
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+{ASSIGNED}\s*+\")[^\"]{{4,}}+"),  # "password": "...", token="..."
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+{ASSIGNED}\s*+')[^']{{4,}}+"),
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+{ASSIGNED}\s*+)[^\s\"',;]{{4,}}+"),  # API_KEY=..., password: ...
    (
        SECRET_WORDS,
        rf"(?P<keep>(?<!\S)--(?=[\w-]*?{SECRET_WORDS})[\w-]++\s++)"
        r"(?:\"[^\"]*+\"?|'[^']*+'?|[^\s\"'-][^\s\"']*+)",
    ),  # --password X
    ("-u", r"(?P<keep>(?<!\S)(?:-u|--user)(?:\s++|=)?[\"']?[^\s:\"']++:)[^\s\"']++"),  # curl -u user:password
    (
        r"(?<!\S)(?:-u|--user(?:name)?)(?:\s|=)|\blogin\b|\bsshpass\b",  # -p X is a password on a line that signs in
        r"(?P<keep>(?<!\S)(?:sshpass\s++)?-p(?:\s++)?)[^\s\"'-][^\s\"']*+",
    ),  # docker login -u x -p X, mysql -pX
)


def masked(text: str, known: Sequence[str] = ()) -> str:
    """Text from a build as it may leave Google Cloud: its first MASK_WINDOW characters (a word the cut falls in
    dropped: it could be a part of a secret), the `known` secrets (known_secrets()) and anything shaped like a
    credential masked."""
    return mask(windowed(text, MASK_WINDOW), known)


def windowed(text: str, size: int) -> str:
    """The text's first `size` characters; where it is cut, without the word the cut falls in (its last CUT_DROPPED
    characters at most: of a longer run, the rest is kept), so that no part of a secret too short to recognise is kept.
    """
    if len(text) <= size:
        return text
    kept = text[:size]
    partial = len(kept) - (kept.rfind(" ") + 1)  # the cut word's characters within the window
    return kept[: size - min(partial, CUT_DROPPED)]


def known_secrets(secrets: Iterable[str]) -> tuple[str, ...]:
    """Secrets as a text may show them, longest first (a secret that holds another is masked whole): as they are,
    URL-encoded, and within base64 at each of its three alignments (a token in a Docker config's `auth`, or echoed
    through `base64`)."""
    from urllib.parse import quote, quote_plus

    forms = set()
    for secret in (s for s in secrets if len(s) >= SECRET_MIN):
        forms |= {secret, quote(secret, safe=""), quote_plus(secret)}
        if len(secret) >= 12:  # what base64 shows of it whatever precedes it, without the edges others share
            for shift, edge in ((0, 0), (1, 2), (2, 3)):
                encoded = base64.b64encode(b"\0" * shift + secret.encode()).decode()
                forms |= {encoded[edge:-4], encoded[edge:]}  # within a longer encoding, and ending one
    return tuple(sorted(forms, key=len, reverse=True))


def mask(text: str, known: Sequence[str]) -> str:
    """The `known` secrets and the credential shapes masked in a text already cut to its window."""
    text = re.sub(TOKEN_SHAPE, MASKED, mask_known(text, known))
    for gate, shape in VALUE_SHAPES:
        if re.search(gate, text):
            text = re.sub(shape, rf"\g<keep>{MASKED}", text)
    return text


def mask_pieces(line: str, known: Sequence[str]) -> str:
    """A line with a part (PIECE_MIN characters or more) of a known secret masked where it begins or ends the line:
    a secret split across two lines."""
    for secret in known:
        for size in range(min(len(secret) - 1, len(line)), PIECE_MIN - 1, -1):  # a part: the whole line, at most
            if line.endswith(secret[:size]):
                line = line[:-size] + MASKED
                break
        for size in range(min(len(secret) - 1, len(line)), PIECE_MIN - 1, -1):
            if line.startswith(secret[-size:]):
                line = MASKED + line[size:]
                break
    return line


def scrubbed(value: Any, known: Sequence[str]) -> Any:
    """A JSON value with every `known` secret masked in each of its strings: the last guard before a body leaves. It
    is given only secrets no branch, key or name can hold by chance (UNMISTAKABLE_MIN): a weak password is masked
    where a build's text shows it, and never rewrites what routes a status."""
    if isinstance(value, str):
        return mask_known(value, known)
    if isinstance(value, dict):
        return {key: scrubbed(item, known) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item, known) for item in value]
    return value


def mask_known(text: str, known: Sequence[str]) -> str:
    for secret in known:
        text = text.replace(secret, MASKED)
    return text
