//! Deterministic identifiers.
//!
//! A payout id is derived from the client id and the client's Idempotency-Key,
//! so every retry of one request names the same payout, and a crash between
//! two steps of a command is healed by running the request again.

use uuid::Uuid;

use crate::money::Currency;

/// Namespace of the version 5 UUIDs below; changing it would give every
/// existing key a new payout id, so it is fixed forever.
const NAMESPACE: Uuid = Uuid::from_u128(0x6e65_7078_792d_6c65_6467_6572_2d69_6473);

pub fn payout_id(client_id: Uuid, idempotency_key: &str) -> Uuid {
    derive(&["payout", &client_id.to_string(), idempotency_key])
}

/// Deposit id for a deposit made by `actor_id` with its Idempotency-Key.
pub fn deposit_id(actor_id: Uuid, idempotency_key: &str) -> Uuid {
    derive(&["deposit", &actor_id.to_string(), idempotency_key])
}

/// Aggregate id of a client's wallet in one currency.
pub fn wallet_id(client_id: Uuid, currency: Currency) -> String {
    format!("{client_id}:{currency}")
}

fn derive(parts: &[&str]) -> Uuid {
    // Each part is length-prefixed so that ("a:b", "c") and ("a", "b:c") differ.
    let mut name = Vec::new();
    for part in parts {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payout_id_is_stable_and_scoped() {
        let alice = Uuid::from_u128(1);
        let bob = Uuid::from_u128(2);
        assert_eq!(payout_id(alice, "k-1"), payout_id(alice, "k-1"));
        assert_ne!(payout_id(alice, "k-1"), payout_id(bob, "k-1"));
        assert_ne!(payout_id(alice, "k-1"), payout_id(alice, "k-2"));
        assert_ne!(payout_id(alice, "k-1"), deposit_id(alice, "k-1"));
    }
}
