-- Row-level security (0011) does not apply to TRUNCATE: a role granted TRUNCATE on
-- pipeline.* (a blanket `GRANT ALL ON ALL TABLES IN SCHEMA pipeline TO anon`, the
-- mis-grant 0011 guards against) could empty the dead letters -- the only copy of
-- rejected records -- or the watermarks. A statement trigger refuses TRUNCATE to
-- Supabase's API roles whatever they are granted; elt and admins are unaffected.
CREATE OR REPLACE FUNCTION pipeline.elt_refuse_api_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user IN ('anon', 'authenticated') THEN
        RAISE EXCEPTION 'pipeline.% is elt''s bookkeeping: % may not truncate it', TG_TABLE_NAME, current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION pipeline.elt_refuse_api_truncate() FROM PUBLIC;

DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS elt_no_api_truncate ON %s', t);
        EXECUTE format('CREATE TRIGGER elt_no_api_truncate BEFORE TRUNCATE ON %s'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION pipeline.elt_refuse_api_truncate()', t);
    END LOOP;
END $$;
