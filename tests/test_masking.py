"""Personal data masked on realistic strings - and the look-alikes that must stay."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

pytest.importorskip("phonenumbers")

from reflectlm.deploy.masking import MaskingFilter, find, iban_ok, luhn_ok, mask  # noqa: E402

MASKED = [
    ("Please send the statement to jane.doe+billing@example.co.uk asap", "Please send the statement to [EMAIL] asap"),
    ("my email is J.Smith@Mail.Example.COM.", "my email is [EMAIL]."),
    ("call me on +44 20 7946 0958 after 5pm", "call me on [PHONE] after 5pm"),
    ("US number (415) 555-2671, ext later", "US number [PHONE], ext later"),
    ("reach me at +1-202-555-0143 or +49 30 901820", "reach me at [PHONE] or [PHONE]"),
    ("my card 4111 1111 1111 1111 was charged twice", "my card [CARD] was charged twice"),
    ("Card no: 5500-0000-0000-0004 exp 12/27", "Card no: [CARD] exp 12/27"),
    ("amex 378282246310005 declined", "amex [CARD] declined"),
    ("transfer to IBAN GB82 WEST 1234 5698 7654 32 please", "transfer to IBAN [IBAN] please"),
    ("DE89370400440532013000 is my account", "[IBAN] is my account"),
    ("login from 192.168.1.20 blocked", "login from [IP] blocked"),
    ("IPv6 2001:db8::ff00:42:8329 was seen", "IPv6 [IP] was seen"),
]

KEPT = [
    "order #12345678 placed on 2024-01-15 for 1,250.00 EUR at 10:30",
    "card 4111 1111 1111 1112 (fails the Luhn check)",
    "GB82 WEST 1234 5698 7654 33 (fails the IBAN check)",
    "I was charged 49.99 twice on 12/03/2024",
    "version 1.2.3 of the app, build 3.14159",
    "transfer of 4500 to the account ending 1234",
    "the code is 999.999.999.999 not an address",
    "meet at 10:30:00 in room 12",
    "my @handle on the forum and user@localhost",
    "Why is my top up of 20 pounds still pending?",
]


@pytest.mark.parametrize("text,expected", MASKED)
def test_personal_data_is_masked(text, expected):
    assert mask(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_look_alikes_are_kept(text):
    assert mask(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_keep_words_keeps_the_word_count_and_the_region_decides_national_numbers():
    text = "call +44 20 7946 0958 now"
    assert mask(text, keep_words=True) == "call [PHONE] [PHONE] [PHONE] [PHONE] now"
    assert len(mask(text, keep_words=True).split()) == len(text.split())
    uk = "ring 020 7946 0958 today"
    assert mask(uk, region="GB") == "ring [PHONE] today" and mask(uk, region="US") == uk
    assert [m.kind for m in find("a@b.io 4111111111111111 10.0.0.1")] == ["email", "card", "ip"]


def test_the_logging_filter_masks_messages_and_arguments(caplog):
    logger = logging.getLogger("reflectlm.test-masking")
    logger.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="reflectlm.test-masking"):
        logger.info("user %s paid with %s", "ann@example.org", "4111 1111 1111 1111")
    assert "user [EMAIL] paid with [CARD]" in caplog.text and "ann@" not in caplog.text


def test_import_reflectlm_loads_no_serving_or_onnx_dependency():
    code = ("import sys, reflectlm, reflectlm.deploy, reflectlm.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'onnxruntime', 'prometheus_client', 'phonenumbers', "
            "'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
