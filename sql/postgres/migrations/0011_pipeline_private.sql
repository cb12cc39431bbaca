-- Issue 18: keep elt's bookkeeping out of a public API (Supabase's PostgREST).
--
-- pipeline.* holds run logs, error messages and dead letters (whole source records).
-- Supabase's API runs every request as the role `anon` or `authenticated`; a grant
-- on this schema to them (one click in Supabase's dashboard, or a blanket
-- `GRANT ... ON ALL TABLES` script) would publish all of it. Row-level security,
-- on for every table here with a policy that admits every role except those two,
-- keeps their answer empty whatever they are granted. elt's own role owns these
-- tables, and an owner is not subject to its tables' row security, so elt itself
-- is unaffected; a monitoring role granted SELECT still reads every row.
-- No grant to PUBLIC is needed by elt either, so none is left.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS elt_not_public_api ON %s', t);
        EXECUTE format('CREATE POLICY elt_not_public_api ON %s USING (current_user NOT IN (''anon'', ''authenticated''))'
                       ' WITH CHECK (current_user NOT IN (''anon'', ''authenticated''))', t);
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', t);
    END LOOP;
    REVOKE ALL ON SCHEMA pipeline FROM PUBLIC;
END $$;
