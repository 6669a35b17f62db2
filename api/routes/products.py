"""The product catalogue, as synced from the carriers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from api.deps import ReaderDep, SessionDep
from api.errors import documented
from api.schemas.common import CarrierName
from api.schemas.products import ProductsPublic
from api.views import product_public
from models.tables import Product

router = APIRouter(prefix="/v1/products", tags=["products"])


@router.get("", responses=documented(401, 403, 422))
def list_products(
    _: ReaderDep, session: SessionDep, carrier: CarrierName | None = None
) -> ProductsPublic:
    """The catalogue synced from the carriers, optionally of one carrier."""
    query = select(Product).order_by(col(Product.id))
    if carrier is not None:
        query = query.where(Product.carrier == carrier)
    products = [product_public(row) for row in session.exec(query).all()]
    return ProductsPublic(data=products, count=len(products))
