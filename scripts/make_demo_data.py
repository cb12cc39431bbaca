"""Regenerate the demo's sample records (src/elt/demo/data/*.ndjson.gz), deterministically.

    python scripts/make_demo_data.py
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

# Accented letters of the sample names, made plain for e-mail addresses.
ASCII_EMAIL = str.maketrans({"ë": "e", "é": "e", "í": "i", "ü": "u"})
OUT = Path(__file__).resolve().parents[1] / "src" / "elt" / "demo" / "data"
FIRST = ["Olivia", "Liam", "Aroha", "Noah", "Mei", "Lucas", "Zoë", "Mateo", "Priya", "Jack", "Chloé", "Ethan",
         "Aisha", "Leo", "Sofía", "Oscar", "Hana", "Tama", "Ingrid", "Kofi"]
LAST = ["Smith", "Nguyen", "Williams", "Brown", "Ngata", "García", "Müller", "Kowalski", "Singh", "Tanaka",
        "O'Brien", "Rossi", "Dubois", "Jensen", "Chen", "Silva"]
CITIES = [("Sydney", "AU"), ("Melbourne", "AU"), ("Auckland", "NZ"), ("Wellington", "NZ"), ("London", "GB"),
          ("Berlin", "DE"), ("Lisbon", "PT"), ("Toronto", "CA"), ("Austin", "US"), ("Osaka", "JP")]
PRODUCTS = [("Espresso beans 1kg", 32.0), ("Pour-over kettle", 79.0), ("Ceramic dripper", 28.5),
            ("Paper filters x100", 9.9), ("Burr grinder", 189.0), ("Travel mug", 24.0), ("Milk jug", 19.5),
            ("Scale with timer", 54.0), ("Cold brew kit", 45.0), ("Gift card", 50.0)]
CURRENCY = {"AU": "AUD", "NZ": "NZD", "GB": "GBP", "DE": "EUR", "PT": "EUR", "CA": "CAD", "US": "USD", "JP": "JPY"}


def main() -> None:
    rng = random.Random(20261125)
    start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    customers = []
    for i in range(1, 401):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, country = rng.choice(CITIES)
        created = start + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 30))
        customers.append({
            "id": i, "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower().replace(chr(39), '')}{i}@example.com".translate(ASCII_EMAIL),
            "city": city, "country": country, "segment": rng.choice(["retail", "retail", "cafe", "office"]),
            "created_at": created.isoformat(),
        })
    orders = []
    for i in range(1, 3001):
        customer = rng.choice(customers)
        created = start + dt.timedelta(minutes=i * 14 + rng.randint(0, 10))
        lines = []
        for _ in range(rng.randint(1, 4)):
            name, price = rng.choice(PRODUCTS)
            lines.append({"product": name, "quantity": rng.randint(1, 3), "unit_price": price})
        status = rng.choices(["paid", "shipped", "delivered", "refunded", "cancelled"], [20, 25, 45, 5, 5])[0]
        updated = created + dt.timedelta(hours=rng.randint(0, 96))
        orders.append({
            "id": 100000 + i, "customer_id": customer["id"], "status": status,
            "amount": round(sum(line["quantity"] * line["unit_price"] for line in lines), 2),
            "currency": CURRENCY[customer["country"]], "lines": lines,
            "created_at": created.isoformat(), "updated_at": updated.isoformat(),
        })
    orders.sort(key=lambda o: (o["updated_at"], o["id"]))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("customers", customers), ("orders", orders)):
        with gzip.GzipFile(OUT / f"{name}.ndjson.gz", "wb", mtime=0) as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    print(f"wrote {len(customers)} customers and {len(orders)} orders to {OUT}")


if __name__ == "__main__":
    main()
