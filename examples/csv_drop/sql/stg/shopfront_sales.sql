-- Typed sales lines. Some tills export a decimal comma ("5,5"): normalised here, once.
-- materialized: view
-- unique_key: sale_id
-- tests: unique(sale_id), not_null(sold_at, product), accepted_values(product: Flat white, Long black, Croissant, Banana bread, Chai latte)
SELECT
    (_raw_payload ->> 'sale_id')::int AS sale_id,
    (_raw_payload ->> 'sold_at')::timestamptz AS sold_at,
    _raw_payload ->> 'product' AS product,
    (_raw_payload ->> 'quantity')::int AS quantity,
    replace(_raw_payload ->> 'unit_price', ',', '.')::numeric(8, 2) AS unit_price,
    _source_id AS source_line
FROM raw.shopfront_sales
