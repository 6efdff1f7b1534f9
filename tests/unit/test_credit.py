"""Credit balance applied at finalization (domain/README.md §2, §4.2).

Balances use the ledger's sign: negative = credit the customer holds, positive = owed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.credit import CreditApplication, apply_credit_balance, credit_available
from domain.currencies import currency_info
from domain.money import MAX_AMOUNT

USD_MINIMUM = 50


@dataclass(frozen=True)
class Outcome:
    amount_due: int
    paid: bool
    starting_balance: int
    ending_balance: int
    applied: int  # the applied_to_invoice transaction (0: none)
    too_small: int  # the invoice_too_small transaction (0: none)


def outcome(application: CreditApplication) -> Outcome:
    return Outcome(
        amount_due=application.amount_due,
        paid=application.paid,
        starting_balance=application.starting_balance,
        ending_balance=application.ending_balance,
        applied=application.applied,
        too_small=application.too_small,
    )


CASES = [
    # §4.2: T 3000, B -1000 -> due max(2000, 0) = 2000, ending min(2000, 0) = 0,
    # transaction 0 - (-1000) = +1000.
    pytest.param(3000, -1000, Outcome(2000, False, -1000, 0, 1000, 0), id="s4.2-partial-credit"),
    # §4.2: T 3000, B -5000 -> T+B = -2000: due 0 (paid), ending -2000, transaction +3000.
    pytest.param(3000, -5000, Outcome(0, True, -5000, -2000, 3000, 0), id="s4.2-credit-covers-all"),
    # §4.2: T 3000, B +500 owed -> due 3500, ending 0, transaction 0 - 500 = -500.
    pytest.param(3000, 500, Outcome(3500, False, 500, 0, -500, 0), id="s4.2-owed-balance-collected"),
    # §4.2: T -334, B 0 -> due 0 (paid), ending -334: the 334 becomes credit.
    pytest.param(-334, 0, Outcome(0, True, 0, -334, -334, 0), id="s4.2-negative-total-becomes-credit"),
    # §4.2 minimum charge (usd 50): T 30, B 0 -> due would be 30 < 50: paid with due 0,
    # no applied transaction, 30 carried to the balance as invoice_too_small.
    pytest.param(30, 0, Outcome(0, True, 0, 30, 0, 30), id="s4.2-too-small"),
    # T 3000, B -2980: credit pays 2980 (transaction +2980, balance 0), the remaining
    # 20 < 50 is carried as invoice_too_small: ending 20.
    pytest.param(3000, -2980, Outcome(0, True, -2980, 20, 2980, 20), id="s4.2-too-small-after-credit"),
    # A zero total is paid at once, nothing moves.
    pytest.param(0, 0, Outcome(0, True, 0, 0, 0, 0), id="zero-total-paid-at-once"),
    # A zero total leaves the credit untouched.
    pytest.param(0, -500, Outcome(0, True, -500, -500, 0, 0), id="zero-total-keeps-credit"),
    # Exactly the minimum is collected: due 50.
    pytest.param(50, 0, Outcome(50, False, 0, 0, 0, 0), id="exactly-minimum-collected"),
    # One below the minimum: 49 carried.
    pytest.param(49, 0, Outcome(0, True, 0, 49, 0, 49), id="one-below-minimum-carried"),
    # The carried 30 from before is collected by the next invoice: T 1000, B +30 -> due
    # 1030, transaction -30, ending 0.
    pytest.param(1000, 30, Outcome(1030, False, 30, 0, -30, 0), id="next-invoice-collects-carried"),
    # Owed balance makes a small invoice big enough: T 30, B +30 -> 60 >= 50, due 60.
    pytest.param(30, 30, Outcome(60, False, 30, 0, -30, 0), id="owed-plus-small-reaches-minimum"),
    # Credit exactly equals the total: due 0, ending 0, transaction +3000.
    pytest.param(3000, -3000, Outcome(0, True, -3000, 0, 3000, 0), id="credit-exactly-total"),
    # Negative total with credit: T -500, B -1000 -> ending -1500, transaction -500.
    pytest.param(-500, -1000, Outcome(0, True, -1000, -1500, -500, 0), id="negative-total-adds-to-credit"),
    # Negative total with owed balance: T -200, B +500 -> due 300, ending 0, transaction -500.
    pytest.param(-200, 500, Outcome(300, False, 500, 0, -500, 0), id="negative-total-offsets-owed"),
]


@pytest.mark.parametrize(("total", "balance", "expected"), CASES)
def test_apply_credit_balance_usd(total: int, balance: int, expected: Outcome) -> None:
    assert outcome(apply_credit_balance(total, balance, USD_MINIMUM)) == expected


@pytest.mark.parametrize(
    ("currency", "minimum"),
    [
        # §4.2: USD/EUR/CAD 50, GBP 30, JPY 50.
        pytest.param("usd", 50, id="usd"),
        pytest.param("eur", 50, id="eur"),
        pytest.param("cad", 50, id="cad"),
        pytest.param("gbp", 30, id="gbp"),
        pytest.param("jpy", 50, id="jpy"),
    ],
)
def test_minimum_charges_of_the_spec(currency: str, minimum: int) -> None:
    info = currency_info(currency)
    assert info is not None
    assert info.minimum_charge == minimum
    # One below the minimum is carried; the minimum itself is collected.
    below = apply_credit_balance(minimum - 1, 0, info.minimum_charge)
    assert (below.amount_due, below.too_small, below.ending_balance) == (0, minimum - 1, minimum - 1)
    at = apply_credit_balance(minimum, 0, info.minimum_charge)
    assert (at.amount_due, at.too_small, at.ending_balance) == (minimum, 0, 0)


def test_no_minimum_collects_any_positive_amount() -> None:
    # A currency without a minimum charge (0): T 1 -> due 1.
    assert outcome(apply_credit_balance(1, 0, 0)) == Outcome(1, False, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("ledger_balance", "shown"),
    [
        # §2: the ledger's -1000 (credit) shows as +1000 in invoice_credit_balance.
        pytest.param(-1000, 1000, id="credit-shows-positive"),
        pytest.param(500, -500, id="owed-shows-negative"),
        pytest.param(0, 0, id="zero"),
    ],
)
def test_credit_available_flips_the_sign(ledger_balance: int, shown: int) -> None:
    assert credit_available(ledger_balance) == shown


@given(
    total=st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT),
    balance=st.integers(min_value=-10 * MAX_AMOUNT, max_value=10 * MAX_AMOUNT),
    minimum=st.sampled_from([0, 30, 50, 200, 17500]),
)
def test_credit_application_invariants(total: int, balance: int, minimum: int) -> None:
    result = apply_credit_balance(total, balance, minimum)
    assert result.starting_balance == balance
    # The ledger adds up: B + applied_to_invoice + invoice_too_small = ending balance.
    assert result.starting_balance + result.applied + result.too_small == result.ending_balance
    # Nothing is lost: what is due plus what stays on the balance is T + B.
    assert result.amount_due + result.ending_balance == total + balance
    assert result.amount_due >= 0
    assert result.amount_due == 0 or result.amount_due >= minimum
    assert result.paid == (result.amount_due == 0)
    assert 0 <= result.too_small < max(minimum, 1)
    # Without the minimum-charge rule the formulas of §4.2 hold exactly.
    if result.too_small == 0:
        assert result.amount_due == max(total + balance, 0)
        assert result.ending_balance == min(total + balance, 0)
