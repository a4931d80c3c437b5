-- Device-bound codes (proof of possession, after RFC 7636).

-- Set through AdminService.SetAppSecurity: when true, MintAuthCode refuses
-- a code without a code_challenge. Existing apps keep minting as before.
ALTER TABLE apps
    ADD COLUMN require_code_challenge boolean NOT NULL DEFAULT false;

-- The challenge a redeemed code was minted with (the SHA-256 of the
-- device's verifier), NULL for a code minted without one: a retry of the
-- redemption must present the verifier too, and after the code's record
-- has left Redis this row is the only place that still knows it.
ALTER TABLE redeemed_codes
    ADD COLUMN code_challenge bytea CHECK (length(code_challenge) = 32);
