"""Personal data masked before anything is logged or stored: e-mail addresses, phone numbers,
payment card numbers (Luhn-checked), IBANs (ISO 13616 mod-97 check) and IP addresses (v4, v6).

Pattern recognisers with checksums rather than Presidio: Presidio's analyzer loads spaCy models
that cannot be downloaded here, and for these five kinds a checksum or a parser decides better
than a language model. Phone numbers use `phonenumbers` (Google's libphonenumber rules), which
accepts a number only when it is valid for its country, so dates, amounts, order numbers and
version strings stay as they are.

    mask("mail jo@example.com or call +44 20 7946 0958") -> "mail [EMAIL] or call [PHONE]"

keep_words=True replaces every whitespace-separated piece of a match with the placeholder, so a
text keeps its word count (NER feedback is stored as one tag per word).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?::|[0-9A-Fa-f]{1,4})(?![\w:])")
PLACEHOLDERS = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def find(text: str, region: str = "US") -> list[Match]:
    """Non-overlapping personal-data spans, earliest first (on overlap the longer match wins)."""
    import phonenumbers

    found = [Match("email", m.start(), m.end()) for m in EMAIL.finditer(text)]
    found += [Match("iban", m.start(), m.end()) for m in IBAN.finditer(text) if iban_ok(m.group())]
    for m in CARD.finditer(text):
        # The pattern is greedy ("4111 ... 1111 10" from "... 1111 10.0.0.1"): try the longest run
        # of whole digit groups that passes Luhn.
        s = m.group()
        ends = [i + 1 for i, ch in enumerate(s) if ch.isdigit() and (i + 1 == len(s) or not s[i + 1].isdigit())]
        for e in reversed(ends):
            d = re.sub(r"\D", "", s[:e])
            if 13 <= len(d) <= 19 and luhn_ok(d):
                found.append(Match("card", m.start(), m.start() + e))
                break
    found += [Match("ip", m.start(), m.end()) for m in IPV4.finditer(text)]
    found += [Match("ip", m.start(), m.end()) for m in IPV6.finditer(text) if _ipv6_ok(m.group())]
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        found.append(Match("phone", m.start, m.end))
    found.sort(key=lambda m: (m.start, -(m.end - m.start)))
    out: list[Match] = []
    for m in found:
        if out and m.start < out[-1].end:
            continue  # inside (or overlapping) an earlier, longer match: e.g. a card's digits read as a phone
        out.append(m)
    return out


def mask(text: str, region: str = "US", keep_words: bool = False) -> str:
    """The text with each personal-data span replaced by its placeholder."""
    spans = find(text, region)
    if not spans:
        return text
    parts, pos = [], 0
    for m in spans:
        parts.append(text[pos:m.start])
        tag = PLACEHOLDERS[m.kind]
        piece = text[m.start:m.end]
        parts.append(re.sub(r"\S+", tag, piece) if keep_words else tag)
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


class MaskingFilter:
    """A logging filter that masks personal data in every record's message (args included)."""

    def __init__(self, region: str = "US"):
        self.region = region

    def filter(self, record) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the log line
            msg = str(record.msg)
        record.msg, record.args = mask(msg, self.region), None
        return True
