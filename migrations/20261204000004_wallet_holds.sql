-- Change: creates wallet_deposits and wallet_holds, the per-id records that
-- make wallet commands idempotent without keeping every id in the wallet's
-- snapshot. Both are read models, filled from FundsDeposited, FundsReserved,
-- FundsSettled, FundsReleased and FundsRefunded events.
-- Rollback: forward-only. The previous binary ignores these tables; they can
-- be dropped and rebuilt from the events.

CREATE TABLE wallet_deposits
(
    wallet_id    text   NOT NULL,
    deposit_id   uuid   NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    sequence     bigint NOT NULL,
    PRIMARY KEY (wallet_id, deposit_id)
);

CREATE TABLE wallet_holds
(
    wallet_id     text   NOT NULL,
    payout_id     uuid   NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    state         text   NOT NULL CHECK (state IN ('held', 'settled', 'released', 'refunded')),
    provider      text,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (wallet_id, payout_id)
);
