"""Currency data for money held as integer minor units under lowercase ISO 4217
codes.

Sources, checked on 2026-11-21:

- ISO 4217 List One as published by SIX, the maintenance agency (issue of
  2026-01-01): the set of active codes and their minor units. Funds codes
  (bov, che, chw, clf, cou, mxv, usn, uyi, uyw), precious metals (xau, xag,
  xpd, xpt) and the other non-currency codes (xba-xbd, xdr, xsu, xua, xts,
  xxx) are left out. Codes withdrawn before that issue are absent too: bgn
  (Bulgaria adopted the euro on 2026-01-01), ang (replaced by xcg), zwl (by
  zwg), sll (by sle), hrk.
- Stripe's "Supported currencies" page (https://docs.stripe.com/currencies):
  the zero-decimal and three-decimal lists, the special cases, and the
  "Minimum and maximum charge amounts" list.

``exponent`` is the number of decimals in Stripe's ``amount`` integers, which
differs from ISO 4217 for:

- mga: ISO 2; Stripe lists it as zero-decimal.
- isk, ugx: ISO 0; Stripe keeps them two-decimal for backwards compatibility,
  with the decimals always 00, so amounts must be multiples of 100. Stripe's
  zero-decimal list still names ugx, but its special-cases table and its API
  ("charged amounts must be evenly divisible by 100") treat it like isk.

bhd, jod, kwd, omr and tnd are three-decimal as in ISO, but Stripe requires
the last digit to be 0. huf and twd charge as two-decimal currencies; their
divisible-by-100 rule applies to payouts only. Currencies Stripe does not
support keep their ISO 4217 minor unit (iqd and lyd: 3).

``minimum_charge`` is Stripe's minimum charge in the settlement currency, in
minor units, and 0 where Stripe lists none.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["CURRENCIES", "Currency", "currency_info"]


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int
    minimum_charge: int
    amount_step: int


# fmt: off
# code, exponent, minimum_charge, amount_step
_TABLE: tuple[Currency, ...] = (
    Currency("aed", 2,   200,   1),
    Currency("afn", 2,     0,   1),
    Currency("all", 2,     0,   1),
    Currency("amd", 2,     0,   1),
    Currency("aoa", 2,     0,   1),
    Currency("ars", 2,    50,   1),
    Currency("aud", 2,    50,   1),
    Currency("awg", 2,     0,   1),
    Currency("azn", 2,     0,   1),
    Currency("bam", 2,     0,   1),
    Currency("bbd", 2,     0,   1),
    Currency("bdt", 2,     0,   1),
    Currency("bhd", 3,     0,  10),
    Currency("bif", 0,     0,   1),
    Currency("bmd", 2,     0,   1),
    Currency("bnd", 2,     0,   1),
    Currency("bob", 2,     0,   1),
    Currency("brl", 2,    50,   1),
    Currency("bsd", 2,     0,   1),
    Currency("btn", 2,     0,   1),
    Currency("bwp", 2,     0,   1),
    Currency("byn", 2,     0,   1),
    Currency("bzd", 2,     0,   1),
    Currency("cad", 2,    50,   1),
    Currency("cdf", 2,     0,   1),
    Currency("chf", 2,    50,   1),
    Currency("clp", 0,     0,   1),
    Currency("cny", 2,     0,   1),
    Currency("cop", 2,    50,   1),
    Currency("crc", 2,     0,   1),
    Currency("cuc", 2,     0,   1),
    Currency("cup", 2,     0,   1),
    Currency("cve", 2,     0,   1),
    Currency("czk", 2,  1500,   1),
    Currency("djf", 0,     0,   1),
    Currency("dkk", 2,   250,   1),
    Currency("dop", 2,     0,   1),
    Currency("dzd", 2,     0,   1),
    Currency("egp", 2,     0,   1),
    Currency("ern", 2,     0,   1),
    Currency("etb", 2,     0,   1),
    Currency("eur", 2,    50,   1),
    Currency("fjd", 2,     0,   1),
    Currency("fkp", 2,     0,   1),
    Currency("gbp", 2,    30,   1),
    Currency("gel", 2,     0,   1),
    Currency("ghs", 2,     0,   1),
    Currency("gip", 2,     0,   1),
    Currency("gmd", 2,     0,   1),
    Currency("gnf", 0,     0,   1),
    Currency("gtq", 2,     0,   1),
    Currency("gyd", 2,     0,   1),
    Currency("hkd", 2,   400,   1),
    Currency("hnl", 2,     0,   1),
    Currency("htg", 2,     0,   1),
    Currency("huf", 2, 17500,   1),
    Currency("idr", 2,    50,   1),
    Currency("ils", 2,    50,   1),
    Currency("inr", 2,    50,   1),
    Currency("iqd", 3,     0,   1),
    Currency("irr", 2,     0,   1),
    Currency("isk", 2,     0, 100),
    Currency("jmd", 2,     0,   1),
    Currency("jod", 3,     0,  10),
    Currency("jpy", 0,    50,   1),
    Currency("kes", 2,     0,   1),
    Currency("kgs", 2,     0,   1),
    Currency("khr", 2,     0,   1),
    Currency("kmf", 0,     0,   1),
    Currency("kpw", 2,     0,   1),
    Currency("krw", 0,    50,   1),
    Currency("kwd", 3,     0,  10),
    Currency("kyd", 2,     0,   1),
    Currency("kzt", 2,     0,   1),
    Currency("lak", 2,     0,   1),
    Currency("lbp", 2,     0,   1),
    Currency("lkr", 2,     0,   1),
    Currency("lrd", 2,     0,   1),
    Currency("lsl", 2,     0,   1),
    Currency("lyd", 3,     0,   1),
    Currency("mad", 2,     0,   1),
    Currency("mdl", 2,     0,   1),
    Currency("mga", 0,     0,   1),
    Currency("mkd", 2,     0,   1),
    Currency("mmk", 2,     0,   1),
    Currency("mnt", 2,     0,   1),
    Currency("mop", 2,     0,   1),
    Currency("mru", 2,     0,   1),
    Currency("mur", 2,     0,   1),
    Currency("mvr", 2,     0,   1),
    Currency("mwk", 2,     0,   1),
    Currency("mxn", 2,  1000,   1),
    Currency("myr", 2,   200,   1),
    Currency("mzn", 2,     0,   1),
    Currency("nad", 2,     0,   1),
    Currency("ngn", 2,     0,   1),
    Currency("nio", 2,     0,   1),
    Currency("nok", 2,   300,   1),
    Currency("npr", 2,     0,   1),
    Currency("nzd", 2,    50,   1),
    Currency("omr", 3,     0,  10),
    Currency("pab", 2,     0,   1),
    Currency("pen", 2,     0,   1),
    Currency("pgk", 2,     0,   1),
    Currency("php", 2,    50,   1),
    Currency("pkr", 2,     0,   1),
    Currency("pln", 2,   200,   1),
    Currency("pyg", 0,     0,   1),
    Currency("qar", 2,     0,   1),
    Currency("ron", 2,   200,   1),
    Currency("rsd", 2,     0,   1),
    Currency("rub", 2,    50,   1),
    Currency("rwf", 0,     0,   1),
    Currency("sar", 2,     0,   1),
    Currency("sbd", 2,     0,   1),
    Currency("scr", 2,     0,   1),
    Currency("sdg", 2,     0,   1),
    Currency("sek", 2,   300,   1),
    Currency("sgd", 2,    50,   1),
    Currency("shp", 2,     0,   1),
    Currency("sle", 2,     0,   1),
    Currency("sos", 2,     0,   1),
    Currency("srd", 2,     0,   1),
    Currency("ssp", 2,     0,   1),
    Currency("stn", 2,     0,   1),
    Currency("svc", 2,     0,   1),
    Currency("syp", 2,     0,   1),
    Currency("szl", 2,     0,   1),
    Currency("thb", 2,  1000,   1),
    Currency("tjs", 2,     0,   1),
    Currency("tmt", 2,     0,   1),
    Currency("tnd", 3,     0,  10),
    Currency("top", 2,     0,   1),
    Currency("try", 2,     0,   1),
    Currency("ttd", 2,     0,   1),
    Currency("twd", 2,     0,   1),
    Currency("tzs", 2,     0,   1),
    Currency("uah", 2,     0,   1),
    Currency("ugx", 2,     0, 100),
    Currency("usd", 2,    50,   1),
    Currency("uyu", 2,     0,   1),
    Currency("uzs", 2,     0,   1),
    Currency("ved", 2,     0,   1),
    Currency("ves", 2,     0,   1),
    Currency("vnd", 0,     0,   1),
    Currency("vuv", 0,     0,   1),
    Currency("wst", 2,     0,   1),
    Currency("xaf", 0,     0,   1),
    Currency("xcd", 2,     0,   1),
    Currency("xcg", 2,     0,   1),
    Currency("xof", 0,     0,   1),
    Currency("xpf", 0,     0,   1),
    Currency("yer", 2,     0,   1),
    Currency("zar", 2,    50,   1),
    Currency("zmw", 2,     0,   1),
    Currency("zwg", 2,     0,   1),
)
# fmt: on

CURRENCIES: Mapping[str, Currency] = MappingProxyType({c.code: c for c in _TABLE})

if len(CURRENCIES) != len(_TABLE):
    raise RuntimeError("duplicate currency code in the currency table")


def currency_info(code: str) -> Currency | None:
    """Return the currency for an exact lowercase ISO 4217 code, or None."""
    return CURRENCIES.get(code)
