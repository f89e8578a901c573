"""Personal data is taken out of text before it leaves a ticket (knowledge-base drafts)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.privacy import redact


def test_emails_phones_and_names_are_removed():
    result = redact(
        "Hi, I'm Maria Lopez (maria.lopez@acme.example, +34 612 345 678). Call me at (212) 555-0143.",
        names=["Maria Lopez", "Acme Corp"],
    )
    assert result.text == "Hi, I'm [name] ([email], [phone]). Call me at [phone]."
    assert result.removed == {"email": 1, "phone": 2, "name": 1}


def test_secrets_in_their_usual_shapes():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    text = (
        f"Authorization: Bearer {jwt}\n"
        "key sk_live_51HxYzAbCdEfGhIjKlMn and AKIAIOSFODNN7EXAMPLE\n"
        "password=hunter22 and token: 9f8e7d6c5b4a39281706f5e4d3c2b1a0\n"
        "postgres://admin:s3cret@db.internal:5432/app from 10.0.12.7"
    )
    result = redact(text)
    for secret in (
        jwt,
        "sk_live_51HxYzAbCdEfGhIjKlMn",
        "AKIAIOSFODNN7EXAMPLE",
        "hunter22",
        "9f8e7d6c5b4a",
        "s3cret",
    ):
        assert secret not in result.text, secret
    assert "10.0.12.7" not in result.text and "[ip]" in result.text
    assert "db.internal:5432/app" in result.text  # the host is not personal, the password is


def test_card_numbers_and_cjk_text():
    result = redact(
        "カード番号 4111 1111 1111 1111 で支払いに失敗しました。田中さんに連絡: 090-1234-5678", ["田中"]
    )
    assert result.text == "カード番号 [card] で支払いに失敗しました。[name]さんに連絡: [phone]"


def test_what_is_not_personal_stays():
    text = "SDK 4.2.1 crashes on iOS 17 with error 503 after 30 seconds; build 20260314 on port 8080."
    assert redact(text).text == text
    assert redact(text).removed == {}


def test_names_are_matched_whole_and_case_insensitively():
    assert redact("ANA reported it; banana is fine", ["Ana"]).text == "[name] reported it; banana is fine"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_redacting_twice_changes_nothing_more(text):
    once = redact(text)
    assert redact(once.text).text == once.text
    assert redact(once.text).removed == {}
