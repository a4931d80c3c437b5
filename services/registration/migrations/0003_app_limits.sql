-- An app's own rate limits, set through AdminService.SetAppLimits: one
-- column per scope that names an app, holding a rate in the syntax of the
-- RATE_LIMIT_* variables or `off`. NULL keeps the deployment's default, so
-- every existing app keeps the limits it had.
ALTER TABLE apps
    ADD COLUMN limit_mint_per_key text,
    ADD COLUMN limit_mint_per_external_id text,
    ADD COLUMN limit_redeem_per_device text;
