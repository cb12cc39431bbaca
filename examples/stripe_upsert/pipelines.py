"""Stripe-style API into PostgreSQL with upsert: one row per customer and per charge, updated in place.

Run it (the fake API starts by itself, on 127.0.0.1 only):

    elt --project examples/stripe_upsert run

Against the real Stripe, delete the two lines marked "fake", set
``STRIPE_KEY`` in ``.env``, and point ``base_url`` at https://api.stripe.com.
"""

import os

import fake_stripe  # fake: the bundled stand-in for api.stripe.com

from elt import (
    BearerAuth,
    Cursor,
    Pipeline,
    RateLimit,
    RestExtractor,
    StartingAfterPaginator,
    from_env,
)

API = fake_stripe.start()  # fake
os.environ.setdefault("STRIPE_KEY", "sk_test_local_example_key")  # fake: a real key goes in .env

# Stripe allows 100 read requests/s in live mode, 25 in test mode; one budget for every stream.
STRIPE_LIMIT = RateLimit(per_second=25)


class StripeList(RestExtractor):
    """What every Stripe list endpoint shares: auth, limit, pagination, the list in `data`."""

    base_url = API.url + "/v1"
    records_path = "data"
    primary_key = "id"
    paginator = StartingAfterPaginator(limit=100)
    auth = BearerAuth(from_env("STRIPE_KEY"))
    rate_limit = STRIPE_LIMIT
    write_strategy = "upsert"
    # Stripe lists newest first: the watermark is saved when the stream completes.
    sorted_by_cursor = False


class Customers(StripeList):
    name = "customers"
    path = "/customers"
    # Customers are created, rarely changed: read the new ones since the last run (an hour of overlap).
    cursor = Cursor("created", param="created[gte]", lookback=3600)


class Charges(StripeList):
    """Charges change status after creation: read all of them each run, upsert keeps one row per id."""

    name = "charges"
    path = "/charges"


Pipeline("stripe", streams=[Customers(), Charges()], description="Stripe customers and charges, upserted")
