//! Loading a wallet together with the per-id records its commands check.

use nepxy_ledger::Wallet;
use nepxy_ledger::wallet::{Hold, HoldState};
use uuid::Uuid;

use super::{Loaded, StoreError, UnitOfWork};

impl UnitOfWork {
    /// Loads a wallet and adds the deposit or reservation recorded under `id`,
    /// which the wallet's snapshot leaves out, so that a repeated command is
    /// recognized however old the first one is.
    pub async fn load_wallet(
        &mut self,
        wallet_id: &str,
        id: Uuid,
    ) -> Result<Loaded<Wallet>, StoreError> {
        let mut wallet = self.load::<Wallet>(wallet_id).await?;

        let deposit: Option<i64> = sqlx::query_scalar(
            "SELECT amount_minor FROM wallet_deposits WHERE wallet_id = $1 AND deposit_id = $2",
        )
        .bind(wallet_id)
        .bind(id)
        .fetch_optional(self.connection())
        .await?;
        if let Some(amount_minor) = deposit {
            wallet.aggregate.remember_deposit(id, amount_minor);
        }

        let hold: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT amount_minor, state, provider FROM wallet_holds WHERE wallet_id = $1 AND payout_id = $2",
        )
        .bind(wallet_id)
        .bind(id)
        .fetch_optional(self.connection())
        .await?;
        if let Some((amount_minor, state, provider)) = hold {
            let state = HoldState::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("hold {id} has unknown state {state:?}"))
            })?;
            let provider = provider
                .map(|name| {
                    name.parse().map_err(|_| {
                        StoreError::Corrupt(format!("hold {id} has unknown provider {name:?}"))
                    })
                })
                .transpose()?;
            wallet.aggregate.remember_hold(
                id,
                Hold {
                    amount_minor,
                    state,
                    provider,
                },
            );
        }
        Ok(wallet)
    }
}
