"""Deterministic demo data for the commerce backend: `supportflow seed`.

Everything comes from one `random.Random(seed)` and one anchor time (`now`, by default the
start of the current UTC day), so the same seed on the same day writes the same rows. Every row
has a deterministic key (ids, or a `seed:` idempotency key), and rows are inserted
`ON CONFLICT DO NOTHING`: seeding twice leaves the data as it was; `reset=True` empties the
commerce tables first (and restarts the refund/return/case numbers).

Every seed also writes the well-known customers of `KNOWN_CUSTOMERS`, whatever the seed, so
scripted conversations and tests can rely on them:

- `C000001` Alice Martin, alice@example.com, ZIP 94107, gold, EUR, Visa •••• 4242:
  1000001 pending (no payment yet), 1000002 processing (128.00 captured),
  1000003 shipped (UPS 1Z999AA10123456784, ETA in 2 days), 1000004 delivered 5 days ago
  (59.90 EUR captured, invoice INV-20931; returnable), 1000005 delivered 45 days ago (outside the
  30-day return window).
- `C000002` Bob Stone, bob@example.com, ZIP 10001, standard, USD, Mastercard •••• 5454 and
  PayPal: 2000001 pending, 2000002 shipped (FedEx 771234567890), 2000003 delivered 3 days ago
  (45.00 captured), 2000004 cancelled (refunded), 2000005 returned (refunded).

Between them they hold an order in every status. Generated customers are `C000003` onwards.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

__all__ = [
    "KNOWN_CUSTOMERS",
    "KNOWN_ORDER_COUNT",
    "ORDER_STATUSES",
    "PRODUCTS",
    "VARIANTS",
    "KnownCustomer",
    "KnownOrder",
    "SeedData",
    "check_counts",
    "customer_rows",
    "generate",
    "insert_rows",
    "seed_commerce",
]

ORDER_STATUSES = ("pending", "processing", "shipped", "delivered", "cancelled", "returned")
CENT = Decimal("0.01")

# (sku, name, unit price): the catalog, fixed so known orders and `modify_items` can name skus
PRODUCTS: tuple[tuple[str, str, Decimal], ...] = tuple(
    (sku, name, Decimal(price))
    for sku, name, price in (
        ("KIT-DRIP-01", "Ceramic pour-over coffee dripper", "34.00"),
        ("KIT-KETL-02", "Gooseneck kettle, 1 l", "59.00"),
        ("KIT-SKIL-10", 'Cast iron skillet, 10"', "45.00"),
        ("KIT-KNIF-08", "Chef's knife, 8 inch", "89.00"),
        ("KIT-BOTL-05", "Stainless steel water bottle", "24.50"),
        ("KIT-MUGS-04", "Stoneware mugs (set of 4)", "38.00"),
        ("KIT-BEAN-01", "Single-origin coffee beans, 1 kg", "32.90"),
        ("KIT-TEAP-01", "Glass teapot with infuser", "27.50"),
        ("HOM-DUVT-Q", "Linen duvet cover, queen", "89.00"),
        ("HOM-PILW-2", "Linen pillowcase pair", "39.00"),
        ("HOM-THRW-01", "Wool throw blanket", "75.00"),
        ("HOM-CNDL-03", "Soy candle, cedar", "18.00"),
        ("HOM-LAMP-01", "Brass desk lamp", "129.00"),
        ("HOM-TOWL-06", "Cotton bath towels (set of 6)", "64.00"),
        ("HOM-PLNT-01", "Ceramic planter, large", "42.00"),
        ("APP-SOCK-3", "Merino wool socks (3-pack)", "29.95"),
        ("APP-TEE-M", "Organic cotton T-shirt", "25.00"),
        ("APP-HOOD-L", "Fleece hoodie", "69.00"),
        ("APP-JACK-M", "Waterproof rain jacket", "149.00"),
        ("APP-BEAN-1", "Knit beanie", "22.00"),
        ("APP-GLOV-M", "Leather gloves", "55.00"),
        ("SHO-TRAI-42", "Trail running shoes", "119.00"),
        ("SHO-SNEA-41", "Canvas sneakers", "65.00"),
        ("SHO-SLIP-40", "Wool slippers", "48.00"),
        ("ELE-BUDS-01", "Wireless earbuds", "79.99"),
        ("ELE-CHRG-65", "USB-C charger, 65 W", "39.99"),
        ("ELE-CABL-2M", "Braided USB-C cable, 2 m", "14.99"),
        ("ELE-SPKR-01", "Bluetooth speaker", "99.00"),
        ("ELE-KEYB-01", "Mechanical keyboard", "129.00"),
        ("ELE-MOUS-01", "Wireless mouse", "34.99"),
        ("OUT-TENT-2", "Two-person tent", "249.00"),
        ("OUT-BAG-30", "Daypack, 30 l", "89.00"),
        ("OUT-LAMP-H", "Headlamp", "29.00"),
        ("OUT-MAT-01", "Yoga mat", "39.00"),
        ("BTY-SOAP-3", "Olive oil soap (3 bars)", "15.00"),
        ("BTY-BALM-01", "Lip balm set", "12.50"),
        ("BTY-SHAM-01", "Solid shampoo bar", "13.90"),
        ("TOY-PUZZ-1K", "Jigsaw puzzle, 1000 pieces", "24.00"),
        ("TOY-BLOC-01", "Wooden building blocks", "49.00"),
        ("BOK-COOK-01", "Cookbook: Weeknight Vegetables", "28.00"),
    )
)
# Other sizes of catalog products, for exchanges (`orders.create_exchange`: same SKU stem, same price).
# Only in the catalog, never drawn for generated orders, so adding them changes no seeded order.
VARIANTS: tuple[tuple[str, str, Decimal], ...] = tuple(
    (sku, name, Decimal(price))
    for sku, name, price in (
        ("SHO-TRAI-41", "Trail running shoes, size 41", "119.00"),
        ("SHO-TRAI-43", "Trail running shoes, size 43", "119.00"),
        ("SHO-TRAI-44", "Trail running shoes, size 44", "119.00"),
        ("APP-TEE-S", "Organic cotton T-shirt, size S", "25.00"),
        ("APP-TEE-L", "Organic cotton T-shirt, size L", "25.00"),
        ("APP-HOOD-M", "Fleece hoodie, size M", "69.00"),
        ("APP-HOOD-XL", "Fleece hoodie, size XL", "69.00"),
        ("APP-GLOV-L", "Leather gloves, size L", "55.00"),
        ("SHO-SNEA-42", "Canvas sneakers, size 42", "65.00"),
    )
)
_PRODUCT = {sku: (name, price) for sku, name, price in PRODUCTS}


@dataclass(frozen=True)
class KnownOrder:
    """One order of a well-known customer; `days_ago` is when it was placed, relative to the seed's `now`."""

    number: str
    status: str
    items: tuple[tuple[str, int], ...]  # (sku, qty)
    days_ago: float
    carrier: str | None = None
    tracking_number: str | None = None
    delivered_days_ago: float | None = None
    invoice: str | None = None


@dataclass(frozen=True)
class KnownCustomer:
    """A customer every seed writes, identically, for scripted conversations and tests."""

    customer_id: str
    name: str
    email: str
    phone: str
    zip: str
    tier: str
    currency: str
    street: str
    city: str
    country: str
    payment_methods: tuple[tuple[str, str], ...]  # (kind, label); the first is the default
    orders: tuple[KnownOrder, ...]


KNOWN_CUSTOMERS: dict[str, KnownCustomer] = {
    c.customer_id: c
    for c in (
        KnownCustomer(
            customer_id="C000001",
            name="Alice Martin",
            email="alice@example.com",
            phone="+1 415-555-0134",
            zip="94107",
            tier="gold",
            currency="EUR",
            street="500 Brannan St, Apt 4",
            city="San Francisco",
            country="US",
            payment_methods=(("card", "Visa •••• 4242"),),
            orders=(
                KnownOrder("1000001", "pending", (("KIT-DRIP-01", 1),), days_ago=0.1),
                KnownOrder("1000002", "processing", (("HOM-DUVT-Q", 1), ("HOM-PILW-2", 1)), days_ago=1),
                KnownOrder(
                    "1000003",
                    "shipped",
                    (("SHO-TRAI-42", 1),),
                    days_ago=3,
                    carrier="UPS",
                    tracking_number="1Z999AA10123456784",
                ),
                KnownOrder(
                    "1000004",
                    "delivered",
                    (("APP-SOCK-3", 2),),
                    days_ago=9,
                    carrier="UPS",
                    tracking_number="1Z999AA10123456791",
                    delivered_days_ago=5,
                    invoice="INV-20931",
                ),
                KnownOrder(
                    "1000005",
                    "delivered",
                    (("KIT-BOTL-05", 2),),
                    days_ago=50,
                    carrier="UPS",
                    tracking_number="1Z999AA10123456802",
                    delivered_days_ago=45,
                    invoice="INV-20877",
                ),
            ),
        ),
        KnownCustomer(
            customer_id="C000002",
            name="Bob Stone",
            email="bob@example.com",
            phone="+1 212-555-0188",
            zip="10001",
            tier="standard",
            currency="USD",
            street="350 W 31st St",
            city="New York",
            country="US",
            payment_methods=(("card", "Mastercard •••• 5454"), ("paypal", "PayPal (b•••@example.com)")),
            orders=(
                KnownOrder("2000001", "pending", (("ELE-BUDS-01", 1),), days_ago=0.2),
                KnownOrder(
                    "2000002",
                    "shipped",
                    (("ELE-KEYB-01", 1), ("ELE-CABL-2M", 2)),
                    days_ago=4,
                    carrier="FedEx",
                    tracking_number="771234567890",
                ),
                KnownOrder(
                    "2000003",
                    "delivered",
                    (("KIT-SKIL-10", 1),),
                    days_ago=8,
                    carrier="FedEx",
                    tracking_number="771234567906",
                    delivered_days_ago=3,
                    invoice="INV-20944",
                ),
                KnownOrder("2000004", "cancelled", (("OUT-TENT-2", 1),), days_ago=20, invoice="INV-20902"),
                KnownOrder(
                    "2000005",
                    "returned",
                    (("APP-JACK-M", 1),),
                    days_ago=40,
                    carrier="FedEx",
                    tracking_number="771234567913",
                    delivered_days_ago=35,
                    invoice="INV-20855",
                ),
            ),
        ),
    )
}
KNOWN_ORDER_COUNT = sum(len(c.orders) for c in KNOWN_CUSTOMERS.values())


def _words(paragraph: str) -> tuple[str, ...]:
    """A paragraph of names reads better than sixty quoted words."""
    return tuple(paragraph.split())


FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy Anthony Sandra Mark Ashley Paul "
    "Emily Steven Michelle Andrew Amanda Kevin Melissa Brian Laura George Rebecca Camille Louis Chloé Hugo "
    "Léa Lucas Manon Jonas Mia Felix Hannah Lukas Emma Paul Sofia Mateo Lucía Diego Aiko Wei Priya Arjun"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Lee Perez Thompson White Harris Sanchez Clark Lewis Walker "
    "Young Allen King Wright Scott Nguyen Hill Flores Green Adams Nelson Baker Dubois Bernard Petit Durand "
    "Leroy Moreau Müller Schmidt Schneider Fischer Weber Becker Fernández Ruiz Romero Tanaka Chen Patel Shah"
)
STREETS = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Blvd",
    "Lake View Rd",
    "Hillside Ave",
    "Park Pl",
    "Sunset Blvd",
    "Mission St",
    "Market St",
    "Broadway",
    "Union Sq",
)
# (city, country, zip prefix, zip length, currency, phone prefix)
CITIES = (
    ("San Francisco", "US", "941", 5, "USD", "+1 415-555-"),
    ("New York", "US", "100", 5, "USD", "+1 212-555-"),
    ("Austin", "US", "787", 5, "USD", "+1 512-555-"),
    ("Seattle", "US", "981", 5, "USD", "+1 206-555-"),
    ("Chicago", "US", "606", 5, "USD", "+1 312-555-"),
    ("Boston", "US", "021", 5, "USD", "+1 617-555-"),
    ("Denver", "US", "802", 5, "USD", "+1 303-555-"),
    ("Portland", "US", "972", 5, "USD", "+1 503-555-"),
    ("Miami", "US", "331", 5, "USD", "+1 305-555-"),
    ("Atlanta", "US", "303", 5, "USD", "+1 404-555-"),
    ("Paris", "FR", "750", 5, "EUR", "+33 6 12 "),
    ("Lyon", "FR", "690", 5, "EUR", "+33 6 45 "),
    ("Berlin", "DE", "10", 5, "EUR", "+49 151 555 "),
    ("Munich", "DE", "80", 5, "EUR", "+49 160 555 "),
    ("Madrid", "ES", "280", 5, "EUR", "+34 612 555 "),
)
CARRIERS = {"US": ("UPS", "FedEx", "USPS"), "FR": ("Colissimo", "DHL"), "DE": ("DHL", "DPD"), "ES": ("DHL", "DPD")}
SUBSCRIPTION_PLANS = ("Coffee Club, monthly", "Free shipping, yearly", "Sock drawer, quarterly", "Beauty box, monthly")
CASE_SUBJECTS = (
    ("Damaged item on arrival", "The package arrived with a dented corner and the item is scratched."),
    ("Wrong size delivered", "I ordered size M and received L."),
    ("Invoice address correction", "Please correct the company name on my invoice."),
    ("Missing item in parcel", "One of the items on the packing slip was not in the box."),
)


@dataclass
class SeedData:
    """The rows to insert, table by table, in insertion order (parents before children)."""

    products: list[tuple[Any, ...]] = field(default_factory=list)
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    addresses: list[tuple[Any, ...]] = field(default_factory=list)
    payment_methods: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    order_items: list[tuple[Any, ...]] = field(default_factory=list)
    shipments: list[tuple[Any, ...]] = field(default_factory=list)
    payments: list[tuple[Any, ...]] = field(default_factory=list)
    refunds: list[tuple[Any, ...]] = field(default_factory=list)
    invoices: list[tuple[Any, ...]] = field(default_factory=list)
    subscriptions: list[tuple[Any, ...]] = field(default_factory=list)
    returns: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[tuple[Any, ...]] = field(default_factory=list)

    def tables(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        return [(name, getattr(self, name)) for name in _INSERTS]


_INSERTS: dict[str, str] = {
    "products": "INSERT INTO commerce.products (sku, name, unit_price) VALUES ($1, $2, $3)",
    "customers": "INSERT INTO commerce.customers (customer_id, name, email, phone, zip, tier, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
    "addresses": "INSERT INTO commerce.addresses (address_id, customer_id, kind, lines, city, zip, country, "
    "is_default) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    "payment_methods": "INSERT INTO commerce.payment_methods (payment_method_id, customer_id, kind, label, "
    "is_default) VALUES ($1, $2, $3, $4, $5)",
    "orders": "INSERT INTO commerce.orders (order_number, customer_id, status, currency, total, shipping_address, "
    "placed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
    "order_items": "INSERT INTO commerce.order_items (order_number, sku, name, qty, unit_price) "
    "VALUES ($1, $2, $3, $4, $5)",
    "shipments": "INSERT INTO commerce.shipments (shipment_id, order_number, carrier, tracking_number, status, "
    "shipped_at, eta, delivered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    "payments": "INSERT INTO commerce.payments (payment_id, order_number, payment_method_id, amount, status, "
    "captured_at) VALUES ($1, $2, $3, $4, $5, $6)",
    "refunds": "INSERT INTO commerce.refunds (order_number, payment_id, amount, reason, status, idempotency_key, "
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    "invoices": "INSERT INTO commerce.invoices (number, order_number, amount, issued_at, url) "
    "VALUES ($1, $2, $3, $4, $5)",
    "subscriptions": "INSERT INTO commerce.subscriptions (subscription_id, customer_id, plan, status, renews_at) "
    "VALUES ($1, $2, $3, $4, $5)",
    "returns": "INSERT INTO commerce.returns (order_number, kind, items, reason, status, idempotency_key, "
    "created_at) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)",
    "cases": "INSERT INTO commerce.cases (customer_id, subject, description, priority, status, idempotency_key, "
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    "notes": "INSERT INTO commerce.notes (customer_id, text, idempotency_key, created_at) VALUES ($1, $2, $3, $4)",
}
# children before parents is irrelevant with CASCADE; every table, so the numbers restart too
_ALL_TABLES = (
    "action_log",
    "notes",
    "cases",
    "returns",
    "subscriptions",
    "invoices",
    "refunds",
    "payments",
    "shipments",
    "order_items",
    "orders",
    "products",
    "payment_methods",
    "addresses",
    "customers",
)


def default_now() -> datetime:
    """The start of the current UTC day: the anchor that keeps a day's seeds identical."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class _Customer:
    customer_id: str
    name: str
    currency: str
    country: str
    address: dict[str, Any]
    payment_method_ids: list[str]


class _Builder:
    """Accumulates rows; the order-level helpers are shared by known and generated orders."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.now = now
        self.data = SeedData(products=[(sku, name, price) for sku, name, price in PRODUCTS + VARIANTS])
        self.invoice_number = 100_000

    def customer(
        self,
        customer_id: str,
        name: str,
        email: str,
        phone: str,
        zip_code: str,
        tier: str,
        created_at: datetime,
        street: str,
        city: str,
        country: str,
        currency: str,
        payment_methods: Sequence[tuple[str, str]],
        billing: bool,
    ) -> _Customer:
        self.data.customers.append((customer_id, name, email, phone, zip_code, tier, created_at))
        lines = [street]
        self.data.addresses.append((f"{customer_id}-S", customer_id, "shipping", lines, city, zip_code, country, True))
        if billing:
            self.data.addresses.append(
                (f"{customer_id}-B", customer_id, "billing", lines, city, zip_code, country, True)
            )
        ids = []
        for n, (kind, label) in enumerate(payment_methods, start=1):
            pm_id = f"PM{customer_id[1:]}-{n}"
            self.data.payment_methods.append((pm_id, customer_id, kind, label, n == 1))
            ids.append(pm_id)
        address = {"name": name, "lines": lines, "city": city, "zip": zip_code, "country": country}
        return _Customer(customer_id, name, currency, country, address, ids)

    def order(
        self,
        who: _Customer,
        number: str,
        status: str,
        items: Sequence[tuple[str, int]],
        placed_at: datetime,
        carrier: str | None = None,
        tracking_number: str | None = None,
        delivered_at: datetime | None = None,
        invoice: str | None = None,
        payment_failed: bool = False,
        partial_refund: Decimal | None = None,
        payment_method_id: str | None = None,
    ) -> None:
        """One order with its items, shipment, payment, refunds, invoice and return, consistent with its status."""
        total = sum((_PRODUCT[sku][1] * qty for sku, qty in items), Decimal(0)).quantize(CENT)
        shipped_at = placed_at + timedelta(hours=20) if status in ("shipped", "delivered", "returned") else None
        updated_at = max(t for t in (placed_at, shipped_at, delivered_at) if t is not None)
        if status == "cancelled":
            updated_at = placed_at + timedelta(hours=3)
        self.data.orders.append((
            number, who.customer_id, status, who.currency, total, json.dumps(who.address), placed_at, updated_at,
        ))  # fmt: skip
        for sku, qty in items:
            self.data.order_items.append((number, sku, _PRODUCT[sku][0], qty, _PRODUCT[sku][1]))
        if shipped_at is not None:
            carrier = carrier or self.rng.choice(CARRIERS[who.country])
            tracking_number = tracking_number or _tracking_number(self.rng, carrier)
            eta = (shipped_at + timedelta(days=4)).date()
            shipment_status = "in_transit" if status == "shipped" else "delivered"
            self.data.shipments.append((
                f"SH{number}", number, carrier, tracking_number, shipment_status, shipped_at, eta,
                delivered_at if shipment_status == "delivered" else None,
            ))  # fmt: skip
        elif status == "processing" and self.rng.random() < 0.3:
            carrier = self.rng.choice(CARRIERS[who.country])
            eta = (placed_at + timedelta(days=5)).date()
            self.data.shipments.append((
                f"SH{number}", number, carrier, _tracking_number(self.rng, carrier), "label_created", None, eta, None,
            ))  # fmt: skip
        if status == "pending":
            return  # payment is captured when the order moves to processing
        method = payment_method_id or who.payment_method_ids[0]
        captured_at = placed_at + timedelta(minutes=2)
        if payment_failed:
            self.data.payments.append((f"PY{number}", number, method, total, "failed", None))
            return
        refund: Decimal | None = None
        if status in ("cancelled", "returned"):
            refund, payment_status, reason = total, "refunded", f"order {status}"
        elif partial_refund is not None:
            refund, payment_status, reason = partial_refund, "partially_refunded", "goodwill: late delivery"
        else:
            payment_status, reason = "captured", ""
        self.data.payments.append((f"PY{number}", number, method, total, payment_status, captured_at))
        if refund is not None:
            refunded_at = updated_at + timedelta(hours=1) if status != "returned" else updated_at + timedelta(days=4)
            self.data.refunds.append((
                number, f"PY{number}", refund, reason, "succeeded", f"seed:refund:{number}", refunded_at,
            ))  # fmt: skip
        if status == "returned":
            returned = json.dumps([{"sku": sku, "qty": qty} for sku, qty in items])
            self.data.returns.append((
                number, "return", returned, "did not fit", "completed", f"seed:return:{number}",
                (delivered_at or updated_at) + timedelta(days=2),
            ))  # fmt: skip
        if invoice is None:
            self.invoice_number += 1
            invoice = f"INV-{self.invoice_number}"
        self.data.invoices.append(
            (invoice, number, total, captured_at, f"https://shop.example.com/invoices/{invoice}.pdf")
        )


def _tracking_number(rng: random.Random, carrier: str) -> str:
    digits = "0123456789"
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXY0123456789", k=6)) + "".join(rng.choices(digits, k=10))
    if carrier == "USPS":
        return "9400" + "".join(rng.choices(digits, k=18))
    if carrier == "Colissimo":
        return "6A" + "".join(rng.choices(digits, k=11))
    length = {"FedEx": 12, "DHL": 10, "DPD": 14}[carrier]
    return "".join(rng.choices(digits, k=length))


def _known(builder: _Builder, customers: Iterable[KnownCustomer] = KNOWN_CUSTOMERS.values()) -> None:
    now = builder.now
    for c in customers:
        who = builder.customer(
            c.customer_id, c.name, c.email, c.phone, c.zip, c.tier, now - timedelta(days=700),
            c.street, c.city, c.country, c.currency, c.payment_methods, billing=False,
        )  # fmt: skip
        for o in c.orders:
            delivered = None if o.delivered_days_ago is None else now - timedelta(days=o.delivered_days_ago)
            builder.order(
                who, o.number, o.status, o.items, now - timedelta(days=o.days_ago),
                carrier=o.carrier, tracking_number=o.tracking_number, delivered_at=delivered, invoice=o.invoice,
            )  # fmt: skip


def customer_rows(customers: Iterable[KnownCustomer], now: datetime | None = None) -> SeedData:
    """The rows of `customers` written as the well-known ones are (the catalog included), for callers
    that need customers of their own on top of a seed, such as `supportflow bench`."""
    builder = _Builder(random.Random(0), now or default_now())
    _known(builder, customers)
    return builder.data


async def insert_rows(conn: asyncpg.Connection, data: SeedData, chunk: int = 2000) -> None:
    """Insert `data` in one transaction; rows already there (same keys) are left as they are."""
    async with conn.transaction():
        for name, rows in data.tables():
            statement = _INSERTS[name] + " ON CONFLICT DO NOTHING"
            for start in range(0, len(rows), chunk):
                await conn.executemany(statement, rows[start : start + chunk])


def check_counts(customers: int, orders: int) -> None:
    """Raise ValueError, in words for the command line, when the counts cannot be seeded."""
    known = len(KNOWN_CUSTOMERS)
    if customers < known:
        raise ValueError(f"--customers must be at least {known} (the well-known customers)")
    if customers > 999_999:
        raise ValueError("--customers must be at most 999999 (ids are C + 6 digits)")
    if orders < KNOWN_ORDER_COUNT:
        raise ValueError(f"--orders must be at least {KNOWN_ORDER_COUNT} (the well-known customers' orders)")
    if orders > KNOWN_ORDER_COUNT and customers == known:
        raise ValueError(f"--orders above {KNOWN_ORDER_COUNT} needs more than {known} customers to own them")
    if orders - KNOWN_ORDER_COUNT > 6_000_000:
        raise ValueError("--orders must be at most 6000010 (7-digit order numbers)")


def generate(customers: int = 2000, orders: int = 6000, seed: int = 7, now: datetime | None = None) -> SeedData:
    """All rows for `customers` customers and `orders` orders in total, the well-known ones included."""
    check_counts(customers, orders)
    rng = random.Random(seed)
    builder = _Builder(rng, now or default_now())
    now = builder.now
    known = len(KNOWN_CUSTOMERS)
    _known(builder)

    people: list[_Customer] = []
    for n in range(known + 1, customers + 1):
        customer_id = f"C{n:06d}"
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        city, country, prefix, length, currency, phone = rng.choice(CITIES)
        zip_code = prefix + "".join(rng.choices("0123456789", k=length - len(prefix)))
        street = f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"
        if rng.random() < 0.25:
            street += f", Apt {rng.randint(1, 40)}"
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}".lower()).encode("ascii", "ignore").decode()
        methods = [_card(rng)]
        if rng.random() < 0.35:
            methods.append(
                ("bank", f"Bank account •••• {rng.randint(0, 9999):04d}")
                if currency == "EUR" and rng.random() < 0.5
                else ("paypal", f"PayPal ({first[0].lower()}•••@example.org)")
            )
        if country == "US":
            phone += f"{rng.randint(0, 9999):04d}"
        else:
            phone += f"{rng.randint(10, 99)} {rng.randint(10, 99)}"
        tier = rng.choices(("standard", "silver", "gold", "platinum"), (70, 18, 9, 3))[0]
        created_at = (now - timedelta(days=rng.uniform(400, 1500))).replace(microsecond=0)
        who = builder.customer(
            customer_id, f"{first} {last}", f"{ascii_name}.{n}@example.org", phone, zip_code, tier, created_at,
            street, city, country, currency, methods, billing=rng.random() < 0.4,
        )  # fmt: skip
        people.append(who)
        if rng.random() < 0.15:
            status = rng.choices(("active", "paused", "cancelled"), (70, 15, 15))[0]
            renews = (now + timedelta(days=rng.randint(1, 60))).date() if status != "cancelled" else None
            builder.data.subscriptions.append(
                (f"SUB{n:06d}", customer_id, rng.choice(SUBSCRIPTION_PLANS), status, renews)
            )
        if rng.random() < 0.03:
            subject, description = rng.choice(CASE_SUBJECTS)
            builder.data.cases.append((
                customer_id, subject, description, rng.choice(("low", "normal", "high")),
                rng.choice(("open", "solved", "closed")), f"seed:case:{customer_id}",
                (now - timedelta(days=rng.uniform(1, 300))).replace(microsecond=0),
            ))  # fmt: skip
        if rng.random() < 0.03:
            builder.data.notes.append((
                customer_id, "Prefers email over phone.", f"seed:note:{customer_id}",
                (now - timedelta(days=rng.uniform(1, 300))).replace(microsecond=0),
            ))  # fmt: skip

    generated = orders - KNOWN_ORDER_COUNT
    taken = {o.number for c in KNOWN_CUSTOMERS.values() for o in c.orders}
    numbers = [n for n in rng.sample(range(3_000_000, 10_000_000), generated + len(taken)) if str(n) not in taken]
    skus = [sku for sku, _, _ in PRODUCTS]
    for i in range(generated):
        who = rng.choice(people)
        # the first six cover every status, whatever the weights draw
        status = ORDER_STATUSES[i] if i < len(ORDER_STATUSES) else _weighted_status(rng)
        items = [
            (sku, rng.choices((1, 2, 3), (80, 15, 5))[0]) for sku in rng.sample(skus, rng.choice((1, 1, 2, 2, 3, 4)))
        ]
        placed_at, delivered_at = _dates(rng, now, status)
        partial = None
        if status == "delivered" and rng.random() < 0.06:
            total = sum((_PRODUCT[sku][1] * qty for sku, qty in items), Decimal(0))
            partial = (total * Decimal(rng.choice((10, 15, 20, 25))) / 100).quantize(CENT)
        builder.order(
            who, str(numbers[i]), status, items, placed_at, delivered_at=delivered_at,
            payment_failed=status == "cancelled" and rng.random() < 0.3, partial_refund=partial,
            payment_method_id=rng.choice(who.payment_method_ids),
        )  # fmt: skip
    return builder.data


def _card(rng: random.Random) -> tuple[str, str]:
    brand = rng.choices(("Visa", "Mastercard", "Amex"), (55, 35, 10))[0]
    return "card", f"{brand} •••• {rng.randint(0, 9999):04d}"


def _weighted_status(rng: random.Random) -> str:
    return rng.choices(ORDER_STATUSES, (6, 7, 10, 55, 10, 12))[0]


def _dates(rng: random.Random, now: datetime, status: str) -> tuple[datetime, datetime | None]:
    """When an order in this status was plausibly placed, and delivered (if it was)."""
    days = {
        "pending": (0.01, 1),
        "processing": (0.2, 3),
        "shipped": (1.5, 6),
        "delivered": (6, 365),
        "cancelled": (1, 365),
        "returned": (20, 365),
    }[status]
    placed_at = now - timedelta(days=rng.uniform(*days), seconds=rng.randint(0, 3599))
    placed_at = placed_at.replace(microsecond=0)
    delivered_at = None
    if status in ("delivered", "returned"):
        delivered_at = placed_at + timedelta(days=rng.uniform(2.5, 5.5))
        delivered_at = min(delivered_at, now - timedelta(hours=1)).replace(microsecond=0)
    return placed_at, delivered_at


ProgressCallback = Callable[[str, int, int], None]


async def seed_commerce(
    conn: asyncpg.Connection,
    customers: int = 2000,
    orders: int = 6000,
    seed: int = 7,
    reset: bool = False,
    now: datetime | None = None,
    on_progress: ProgressCallback | None = None,
    chunk: int = 2000,
) -> dict[str, int]:
    """Write the seed in one transaction (migrations must be applied); returns each table's row count.

    `on_progress(table, rows_done, rows_total)` is called after each chunk.
    """
    data = generate(customers, orders, seed, now)
    tables = data.tables()
    total = sum(len(rows) for _, rows in tables)
    done = 0
    async with conn.transaction():
        if reset:
            await conn.execute(f"TRUNCATE {', '.join('commerce.' + t for t in _ALL_TABLES)} RESTART IDENTITY CASCADE")
        for name, rows in tables:
            statement = _INSERTS[name] + " ON CONFLICT DO NOTHING"
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                await conn.executemany(statement, part)
                done += len(part)
                if on_progress is not None:
                    on_progress(name, done, total)
        counts = {}
        for name in _ALL_TABLES:
            counts[name] = await conn.fetchval(f"SELECT count(*) FROM commerce.{name}")
    return counts
