"""Requirements files covering each pattern, as users would write them."""

RATE_LIMITED_API = """
project: ads_sync
description: Daily ad spend from an ads API, needed hourly by the marketing team.
sources:
  - name: adsapi
    type: rest_api
    access: https://ads.example.com/v2
    auth: {kind: oauth2, secret_env: ADS_CLIENT_SECRET}
    volume: {rows_per_sync: 3000, total_rows: 1500000}
    rate_limit: {requests_per_minute: 60, page_size: 200}
    freshness: hourly
    entities:
      - {name: campaigns, primary_key: id, cursor: updated_at}
      - {name: spend, primary_key: id, cursor: updated_at,
         fields: [{name: id, type: integer}, {name: campaign_id, type: integer}, {name: cost, type: number},
                  {name: day, type: date}, {name: updated_at, type: timestamp}]}
"""

BIG_DATABASE = """
project: ledger
sources:
  - name: erp
    type: database
    format: postgres
    volume: {rows_per_sync: 200000, total_rows: 50000000}
    freshness: daily
    entities:
      - {name: journal_lines, primary_key: id, cursor: updated_at}
      - {name: accounts, primary_key: code}
reliability: {impact_of_failure: high, loss_acceptable: false, retention_days: 2555}
"""

WEBHOOK = """
project: orders_live
sources:
  - name: shopify
    type: webhook
    format: json
    auth: {kind: api_key, secret_env: SHOPIFY_WEBHOOK_SECRET}
    freshness: real_time
    entities: [orders, refunds]
"""

CSV_ONLY = """
project: bakery
description: A bakery's till exports and supplier price lists, dropped as CSV files.
timezone: Europe/Paris
sources:
  - name: till
    type: file_drop
    format: csv
    access: /srv/drop/till
    freshness: daily
    volume: {rows_per_sync: 800, total_rows: 300000}
    entities:
      - {name: sales, primary_key: sale_id,
         fields: [{name: sale_id, type: integer}, {name: sold_at, type: timestamp}, {name: product, type: string},
                  {name: quantity, type: integer}, {name: price, type: number}, {name: paid_card, type: boolean}]}
  - name: suppliers
    type: manual
    format: csv
    freshness: on_demand
    entities: [price_lists]
transformations: [margin per product per week]
"""

HYBRID = """
project: shop_hybrid
description: Orders polled from the shop's API, payments pushed by Stripe.
sources:
  - name: shop
    type: rest_api
    access: https://shop.example.com/api
    auth: {kind: bearer, secret_env: SHOP_TOKEN}
    freshness: hourly
    entities:
      - {name: orders, primary_key: id, cursor: updated_at}
  - name: stripe
    type: webhook
    format: json
    freshness: near_real_time
    entities: [charges]
"""

CDC = """
project: live_ledger
description: Invoices from the ERP's PostgreSQL, needed within minutes, deletes included.
sources:
  - name: erp
    type: database
    format: postgres
    freshness: near_real_time
    volume: {rows_per_sync: 500, total_rows: 2000000}
    entities:
      - {name: invoices, primary_key: id, cursor: updated_at,
         fields: [{name: id, type: integer}, {name: customer, type: string}, {name: total, type: number},
                  {name: updated_at, type: timestamp}]}
      - {name: customers, primary_key: id}
"""

SPECS = {"rate_limited_api": RATE_LIMITED_API, "big_database": BIG_DATABASE, "webhook": WEBHOOK, "csv_only": CSV_ONLY,
         "cdc": CDC, "hybrid": HYBRID}

#: Spec fields that must be honoured or answered: a JSON drop on SFTP, a MySQL database whose access
#: URL holds a password, alert emails.
HONOURED = """
project: shop_ops
alert_email: ops@shop.example
sources:
  - name: orders_db
    type: database
    format: mysql
    access: mysql://app:hunter2-s3cret@db.internal:3306/shop
    auth: {kind: basic, secret_env: SHOP_DB_PASSWORD}
    freshness: daily
    volume: {rows_per_sync: 2000, total_rows: 90000}
    entities: [{name: orders, primary_key: id, cursor: updated_at}]
  - name: partner
    type: file_drop
    format: json
    access: sftp://partner.example.com/outbox
    freshness: daily
    entities: [{name: stock, primary_key: sku,
                fields: [{name: sku, type: string}, {name: on_hand, type: integer}]}]
"""
