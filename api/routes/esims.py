"""eSIMs: register one, read one with its open balance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.exc import IntegrityError

from api.deps import EnrolerDep, ReaderDep, SessionDep
from api.errors import ApiError, documented
from api.schemas.common import ICCID_PATTERN
from api.schemas.esims import EsimCreate, EsimPublic
from api.views import esim_public
from models.identifiers import InvalidIdentifier, validate_iccid
from models.tables import Esim
from services.enrolment import open_balance

router = APIRouter(prefix="/v1/esims", tags=["esims"])


@router.post(
    "",
    status_code=201,
    responses={
        200: {"model": EsimPublic, "description": "Already registered: the same eSIM"},
        **documented(400, 401, 403, 409, 413, 422),
    },
)
def register_esim(
    body: EsimCreate, _: EnrolerDep, session: SessionDep, response: Response
) -> EsimPublic:
    """Register an eSIM with its carrier; registering it again answers 200 with it."""
    for _attempt in range(2):
        esim = session.get(Esim, body.iccid)
        if esim is not None:
            _check_same(esim, body)
            filled = False
            if body.eid is not None and esim.eid is None:
                esim.eid, filled = body.eid, True
            if body.customer_ref is not None and esim.customer_ref is None:
                esim.customer_ref, filled = body.customer_ref, True
            if filled:
                session.add(esim)
                session.commit()
            response.status_code = 200
            return esim_public(esim, open_balance(session, esim.iccid))
        session.add(
            Esim(
                iccid=body.iccid,
                carrier=body.carrier,
                eid=body.eid,
                customer_ref=body.customer_ref,
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # registered concurrently: answer as for a repeat
            continue
        esim = session.get(Esim, body.iccid)
        assert esim is not None
        return esim_public(esim, None)
    raise ApiError(409, "esim_conflict", f"eSIM {body.iccid} is being registered; try again")


def _check_same(esim: Esim, body: EsimCreate) -> None:
    if esim.carrier != body.carrier:
        raise ApiError(409, "esim_conflict", f"eSIM {esim.iccid} is registered with {esim.carrier}")
    if body.eid is not None and esim.eid not in (None, body.eid):
        raise ApiError(409, "esim_conflict", f"eSIM {esim.iccid} is registered with another EID")
    if body.customer_ref is not None and esim.customer_ref not in (None, body.customer_ref):
        raise ApiError(
            409, "esim_conflict", f"eSIM {esim.iccid} is registered for another customer_ref"
        )


@router.get("/{iccid}", responses=documented(401, 403, 404, 422))
def get_esim(
    iccid: Annotated[str, Path(pattern=ICCID_PATTERN)], _: ReaderDep, session: SessionDep
) -> EsimPublic:
    """The eSIM and its open balance, if any."""
    try:
        validate_iccid(iccid)
    except InvalidIdentifier as error:
        raise ApiError(422, "invalid_request", f"iccid: {error}") from None
    esim = session.get(Esim, iccid)
    if esim is None:
        raise ApiError(404, "not_found", f"no eSIM {iccid}")
    return esim_public(esim, open_balance(session, iccid))
