-- Change: adds refresh token families, refresh tokens (stored only as SHA-256
-- hashes) and a record of every issued access token id, so that tokens can be
-- rotated and revoked by token id, by family or by client.
-- Rollback: forward-only. The previous binary ignores these tables and issues
-- access tokens without refresh tokens. Tokens revoked here would pass the
-- previous binary until they expire (at most ACCESS_TOKEN_TTL_SECONDS), and
-- refresh tokens issued here stop working. No backup restore is needed.

-- A family is the chain of refresh tokens that one client_credentials grant
-- started. Presenting a spent refresh token revokes the whole family.
CREATE TABLE token_families
(
    family_id  uuid PRIMARY KEY,
    client_id  uuid        NOT NULL REFERENCES clients (client_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX token_families_client ON token_families (client_id);

CREATE TABLE refresh_tokens
(
    -- SHA-256 of the token; the token itself is never stored.
    token_hash bytea PRIMARY KEY,
    family_id  uuid        NOT NULL REFERENCES token_families (family_id),
    client_id  uuid        NOT NULL REFERENCES clients (client_id),
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the token is exchanged; a token is exchanged at most once.
    used_at    timestamptz
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Every access token this service issued, by its `jti` claim.
CREATE TABLE access_tokens
(
    jti        text PRIMARY KEY,
    client_id  uuid        NOT NULL REFERENCES clients (client_id),
    family_id  uuid REFERENCES token_families (family_id),
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX access_tokens_client ON access_tokens (client_id, expires_at);
CREATE INDEX access_tokens_family ON access_tokens (family_id);
