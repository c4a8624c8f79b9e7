from __future__ import annotations

import re
from typing import TYPE_CHECKING

from relay.decoding import MASK_WINDOW, substitutions

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any


def substituted_secrets(build: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the build's substitutions whose names say they are secrets (_API_TOKEN, _DB_PASSWORD): Cloud
    Build expands them into a step's args, so they are masked wherever the build's text is shown."""
    return tuple(v for k, v in substitutions(build).items() if isinstance(v, str) and re.search(SECRET_WORDS, str(k)))


KEY_BLOCK_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
KEY_BLOCK_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# A line within a private key block: base64, or one of the PEM headers (an encrypted key's).
KEY_BLOCK_LINE = re.compile(r"\s*+(?:[A-Za-z0-9+/=.]++|(?:Proc-Type|DEK-Info|Comment):.*+)?\s*+")
MASKED = "[masked]"
SECRET_MIN = 6  # a known secret shorter than this is not looked for (it would mask ordinary words)
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
SECRET_WORDS = r"(?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"  # noqa: S105
PARAMETER_WORDS = r"(?i:password|passwd|secret|token|key|sig|credential|auth)"
SECRET_NAME = rf"(?<![\w.-])(?=[\w.-]*?{SECRET_WORDS})[\w.-]++"  # a name holding one: linear, from where it starts
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
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+\")[^\"]{{4,}}+"),  # "password": "...", token="..."
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+')[^']{{4,}}+"),
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+)[^\s\"',;]{{4,}}+"),  # API_KEY=..., password: ...
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


def masked(text: str, secrets: Iterable[str] = ()) -> str:
    """Text from a build as it may leave Google Cloud: clipped to MASK_WINDOW, the function's own credentials
    (`secrets`, and their URL-encoded forms) and anything shaped like a credential masked."""
    return mask(text[:MASK_WINDOW], known_secrets(secrets))


def known_secrets(secrets: Iterable[str]) -> list[str]:
    """Secrets as text may show them (as they are, and URL-encoded), longest first: a secret that holds another
    is masked whole."""
    from urllib.parse import quote, quote_plus

    forms = {form for s in secrets if len(s) >= SECRET_MIN for form in (s, quote(s, safe=""), quote_plus(s))}
    return sorted(forms, key=len, reverse=True)


def mask(text: str, known: Sequence[str]) -> str:
    text = re.sub(TOKEN_SHAPE, MASKED, _masked_known(text, known))
    for gate, shape in VALUE_SHAPES:
        if re.search(gate, text):
            text = re.sub(shape, rf"\g<keep>{MASKED}", text)
    return text


def scrubbed(value: Any, known: Sequence[str]) -> Any:
    """A JSON value with every `known` secret masked in each of its strings: the last guard before a body leaves."""
    if isinstance(value, str):
        return _masked_known(value, known)
    if isinstance(value, dict):
        return {key: scrubbed(item, known) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item, known) for item in value]
    return value


def _masked_known(text: str, known: Sequence[str]) -> str:
    for secret in known:
        text = text.replace(secret, MASKED)
    return text
