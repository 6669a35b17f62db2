"""An eSIM's page shows its balance's customer and what every pass it bought cost."""

from __future__ import annotations

import re
from pathlib import Path

from api.app import create_app
from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim
from tests.api.conftest import new_iccid, product
from tests.api.helpers import NoTemporal, offline_api, offline_settings
from tests.dashboard.test_long_history import Unread, _signed_in


def test_an_esims_page_shows_its_customer_and_spend(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    iccid = new_iccid()
    with session_scope(settings.database_url) as session:
        session.add(product("telna", "daily-1gb", 86_400))
        session.add(Esim(iccid=iccid, carrier="telna", customer_ref="ACME-1"))
        session.flush()
        balance = Balance(
            id="bal_spend000000",
            iccid=iccid,
            open_iccid=iccid,
            carrier="telna",
            product_id="telna-daily-1gb",
            workflow_id=f"balance-{iccid}",
            customer_ref="ACME-1",
        )
        session.add(balance)
        session.flush()
        for seq, cents in ((1, None), (2, 150), (3, 175)):
            session.add(
                BalanceLine(
                    balance_id=balance.id,
                    seq=seq,
                    iccid=iccid,
                    carrier="telna",
                    carrier_line_id=f"pkg-{seq}",
                    reference=f"{balance.id}:{seq}",
                    product_id="telna-daily-1gb",
                    state="expired",
                    allowance_bytes=1_000_000,
                    price_cents=cents,
                    currency="USD" if cents else None,
                )
            )
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    app.state.carrier_lines = Unread()
    with offline_api(settings, app) as url, _signed_in(url) as http:
        page = http.get(f"/dashboard/esims/{iccid}")
    assert page.status_code == 200, page.text
    card = re.search(
        r'data-figure="spend"><span class="n">([^<]*)</span><span class="k">([^<]*)<', page.text
    )
    assert card is not None
    assert card.groups() == ("3.25 USD", "spent, 3 passes (1 of unknown price)")
    assert '<b id="customer">ACME-1</b>' in page.text
