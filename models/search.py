"""The custom search attributes operators filter balances on in the Temporal Web UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

BALANCE_STATE = SearchAttributeKey.for_keyword("BalanceState")
ICCID = SearchAttributeKey.for_keyword("Iccid")
CARRIER = SearchAttributeKey.for_keyword("Carrier")
PRODUCT_ID = SearchAttributeKey.for_keyword("ProductId")
LINE_SEQ = SearchAttributeKey.for_int("LineSeq")
LINE_ENDS_AT = SearchAttributeKey.for_datetime("LineEndsAt")

ALL_KEYS = (BALANCE_STATE, ICCID, CARRIER, PRODUCT_ID, LINE_SEQ, LINE_ENDS_AT)
