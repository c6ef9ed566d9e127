//! The wallet aggregate: one per client and currency, owner of the balance rule.

use std::collections::HashMap;

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;
use crate::posting::{Account, JournalEntry};
use crate::provider::Provider;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletCommand {
    /// Credits the available balance from outside funding.
    Deposit {
        client_id: Uuid,
        currency: Currency,
        deposit_id: Uuid,
        amount_minor: i64,
    },
    /// Moves a payout's amount from available to held.
    Reserve {
        client_id: Uuid,
        currency: Currency,
        payout_id: Uuid,
        amount_minor: i64,
    },
    /// Pays a held amount out to the provider after the payout succeeded.
    Settle { payout_id: Uuid, provider: Provider },
    /// Returns a held amount to available after the payout failed.
    Release { payout_id: Uuid },
    /// Returns a settled amount to available after the provider reversed it.
    Refund { payout_id: Uuid, provider: Provider },
}

impl WalletCommand {
    /// The deposit or payout id that makes the command idempotent.
    pub fn key(&self) -> Uuid {
        match self {
            WalletCommand::Deposit { deposit_id, .. } => *deposit_id,
            WalletCommand::Reserve { payout_id, .. }
            | WalletCommand::Settle { payout_id, .. }
            | WalletCommand::Release { payout_id }
            | WalletCommand::Refund { payout_id, .. } => *payout_id,
        }
    }
}

/// Every event names the client and currency so that its journal entry can be
/// built from the event alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletEvent {
    FundsDeposited {
        client_id: Uuid,
        currency: Currency,
        deposit_id: Uuid,
        amount_minor: i64,
    },
    FundsReserved {
        client_id: Uuid,
        currency: Currency,
        payout_id: Uuid,
        amount_minor: i64,
    },
    FundsSettled {
        client_id: Uuid,
        currency: Currency,
        payout_id: Uuid,
        amount_minor: i64,
        provider: Provider,
    },
    FundsReleased {
        client_id: Uuid,
        currency: Currency,
        payout_id: Uuid,
        amount_minor: i64,
    },
    FundsRefunded {
        client_id: Uuid,
        currency: Currency,
        payout_id: Uuid,
        amount_minor: i64,
        provider: Provider,
    },
}

impl WalletEvent {
    pub fn client_id(&self) -> Uuid {
        match self {
            WalletEvent::FundsDeposited { client_id, .. }
            | WalletEvent::FundsReserved { client_id, .. }
            | WalletEvent::FundsSettled { client_id, .. }
            | WalletEvent::FundsReleased { client_id, .. }
            | WalletEvent::FundsRefunded { client_id, .. } => *client_id,
        }
    }

    pub fn currency(&self) -> Currency {
        match self {
            WalletEvent::FundsDeposited { currency, .. }
            | WalletEvent::FundsReserved { currency, .. }
            | WalletEvent::FundsSettled { currency, .. }
            | WalletEvent::FundsReleased { currency, .. }
            | WalletEvent::FundsRefunded { currency, .. } => *currency,
        }
    }

    /// The balanced journal entry this event records.
    pub fn journal_entry(&self) -> JournalEntry {
        match *self {
            WalletEvent::FundsDeposited {
                client_id,
                currency,
                amount_minor,
                ..
            } => JournalEntry::transfer(
                Account::WorldFunding,
                Account::ClientAvailable(client_id),
                currency,
                amount_minor,
            ),
            WalletEvent::FundsReserved {
                client_id,
                currency,
                amount_minor,
                ..
            } => JournalEntry::transfer(
                Account::ClientAvailable(client_id),
                Account::ClientHeld(client_id),
                currency,
                amount_minor,
            ),
            WalletEvent::FundsSettled {
                client_id,
                currency,
                amount_minor,
                provider,
                ..
            } => JournalEntry::transfer(
                Account::ClientHeld(client_id),
                Account::ProviderClearing(provider),
                currency,
                amount_minor,
            ),
            WalletEvent::FundsReleased {
                client_id,
                currency,
                amount_minor,
                ..
            } => JournalEntry::transfer(
                Account::ClientHeld(client_id),
                Account::ClientAvailable(client_id),
                currency,
                amount_minor,
            ),
            WalletEvent::FundsRefunded {
                client_id,
                currency,
                amount_minor,
                provider,
                ..
            } => JournalEntry::transfer(
                Account::ProviderClearing(provider),
                Account::ClientAvailable(client_id),
                currency,
                amount_minor,
            ),
        }
    }
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> String {
        let name = match self {
            WalletEvent::FundsDeposited { .. } => "FundsDeposited",
            WalletEvent::FundsReserved { .. } => "FundsReserved",
            WalletEvent::FundsSettled { .. } => "FundsSettled",
            WalletEvent::FundsReleased { .. } => "FundsReleased",
            WalletEvent::FundsRefunded { .. } => "FundsRefunded",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("insufficient funds: {available_minor} available, {requested_minor} requested")]
    InsufficientFunds {
        available_minor: i64,
        requested_minor: i64,
    },
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(i64),
    #[error("balance would exceed the largest representable amount")]
    Overflow,
    #[error("wallet belongs to client {expected}, not {actual}")]
    WrongClient { expected: Uuid, actual: Uuid },
    #[error("wallet holds {expected}, not {actual}")]
    WrongCurrency {
        expected: Currency,
        actual: Currency,
    },
    #[error("id {0} was already used with a different amount")]
    ReusedId(Uuid),
    #[error("no funds are reserved for payout {0}")]
    UnknownHold(Uuid),
    #[error("funds of payout {payout_id} are {state:?} and cannot be {action}")]
    HoldClosed {
        payout_id: Uuid,
        state: HoldState,
        action: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    Held,
    Settled,
    Released,
    Refunded,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Settled => "settled",
            HoldState::Released => "released",
            HoldState::Refunded => "refunded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            HoldState::Held,
            HoldState::Settled,
            HoldState::Released,
            HoldState::Refunded,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub amount_minor: i64,
    pub state: HoldState,
    /// Provider the funds were settled to; a refund credits the same
    /// provider's clearing account back.
    #[serde(default)]
    pub provider: Option<Provider>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub client_id: Option<Uuid>,
    pub currency: Option<Currency>,
    pub available_minor: i64,
    pub held_minor: i64,
    /// Deposits known to this instance, with their amounts.
    ///
    /// `deposits` and `holds` are a working set, not the full history: they
    /// grow with every deposit and payout, so snapshots leave them out, and
    /// the repository loads the entry of the id a command names (with
    /// [`Wallet::remember_deposit`] and [`Wallet::remember_hold`]) before
    /// deciding. Replaying every event fills them completely.
    #[serde(skip)]
    pub deposits: HashMap<Uuid, i64>,
    /// Reservations known to this instance, by payout id.
    #[serde(skip)]
    pub holds: HashMap<Uuid, Hold>,
}

impl Wallet {
    /// Adds a deposit recorded before the snapshot this wallet was loaded from.
    pub fn remember_deposit(&mut self, deposit_id: Uuid, amount_minor: i64) {
        self.deposits.insert(deposit_id, amount_minor);
    }

    /// Adds a reservation recorded before the snapshot this wallet was loaded from.
    pub fn remember_hold(&mut self, payout_id: Uuid, hold: Hold) {
        self.holds.insert(payout_id, hold);
    }

    fn check_owner(&self, client_id: Uuid, currency: Currency) -> Result<(), WalletError> {
        if let Some(expected) = self.client_id
            && expected != client_id
        {
            return Err(WalletError::WrongClient {
                expected,
                actual: client_id,
            });
        }
        if let Some(expected) = self.currency
            && expected != currency
        {
            return Err(WalletError::WrongCurrency {
                expected,
                actual: currency,
            });
        }
        Ok(())
    }

    fn owner(&self) -> Result<(Uuid, Currency), WalletError> {
        match (self.client_id, self.currency) {
            (Some(client_id), Some(currency)) => Ok((client_id, currency)),
            _ => Err(WalletError::UnknownHold(Uuid::nil())),
        }
    }

    /// Decides the events for `command`; an empty list means the command was
    /// already applied.
    pub fn decide(&self, command: WalletCommand) -> Result<Vec<WalletEvent>, WalletError> {
        match command {
            WalletCommand::Deposit {
                client_id,
                currency,
                deposit_id,
                amount_minor,
            } => {
                self.check_owner(client_id, currency)?;
                if amount_minor <= 0 {
                    return Err(WalletError::NotPositive(amount_minor));
                }
                if let Some(previous) = self.deposits.get(&deposit_id) {
                    return if *previous == amount_minor {
                        Ok(vec![])
                    } else {
                        Err(WalletError::ReusedId(deposit_id))
                    };
                }
                let total = self
                    .available_minor
                    .checked_add(self.held_minor)
                    .and_then(|sum| sum.checked_add(amount_minor));
                if total.is_none() {
                    return Err(WalletError::Overflow);
                }
                Ok(vec![WalletEvent::FundsDeposited {
                    client_id,
                    currency,
                    deposit_id,
                    amount_minor,
                }])
            }
            WalletCommand::Reserve {
                client_id,
                currency,
                payout_id,
                amount_minor,
            } => {
                self.check_owner(client_id, currency)?;
                if amount_minor <= 0 {
                    return Err(WalletError::NotPositive(amount_minor));
                }
                if let Some(hold) = self.holds.get(&payout_id) {
                    return if hold.amount_minor == amount_minor {
                        Ok(vec![])
                    } else {
                        Err(WalletError::ReusedId(payout_id))
                    };
                }
                if amount_minor > self.available_minor {
                    return Err(WalletError::InsufficientFunds {
                        available_minor: self.available_minor,
                        requested_minor: amount_minor,
                    });
                }
                Ok(vec![WalletEvent::FundsReserved {
                    client_id,
                    currency,
                    payout_id,
                    amount_minor,
                }])
            }
            WalletCommand::Settle {
                payout_id,
                provider,
            } => {
                let hold = self.hold(payout_id)?;
                let (client_id, currency) = self.owner()?;
                match hold.state {
                    HoldState::Held => Ok(vec![WalletEvent::FundsSettled {
                        client_id,
                        currency,
                        payout_id,
                        amount_minor: hold.amount_minor,
                        provider,
                    }]),
                    HoldState::Settled | HoldState::Refunded => Ok(vec![]),
                    HoldState::Released => Err(WalletError::HoldClosed {
                        payout_id,
                        state: hold.state,
                        action: "settled",
                    }),
                }
            }
            WalletCommand::Release { payout_id } => {
                let hold = self.hold(payout_id)?;
                let (client_id, currency) = self.owner()?;
                match hold.state {
                    HoldState::Held => Ok(vec![WalletEvent::FundsReleased {
                        client_id,
                        currency,
                        payout_id,
                        amount_minor: hold.amount_minor,
                    }]),
                    HoldState::Released => Ok(vec![]),
                    HoldState::Settled | HoldState::Refunded => Err(WalletError::HoldClosed {
                        payout_id,
                        state: hold.state,
                        action: "released",
                    }),
                }
            }
            WalletCommand::Refund {
                payout_id,
                provider,
            } => {
                let hold = self.hold(payout_id)?;
                let (client_id, currency) = self.owner()?;
                match hold.state {
                    HoldState::Settled => {
                        // Held funds count towards the limit, as for a deposit,
                        // because a later release moves them to available.
                        self.available_minor
                            .checked_add(self.held_minor)
                            .and_then(|sum| sum.checked_add(hold.amount_minor))
                            .ok_or(WalletError::Overflow)?;
                        Ok(vec![WalletEvent::FundsRefunded {
                            client_id,
                            currency,
                            payout_id,
                            amount_minor: hold.amount_minor,
                            provider: hold.provider.unwrap_or(provider),
                        }])
                    }
                    HoldState::Refunded => Ok(vec![]),
                    HoldState::Held | HoldState::Released => Err(WalletError::HoldClosed {
                        payout_id,
                        state: hold.state,
                        action: "refunded",
                    }),
                }
            }
        }
    }

    fn hold(&self, payout_id: Uuid) -> Result<Hold, WalletError> {
        self.holds
            .get(&payout_id)
            .copied()
            .ok_or(WalletError::UnknownHold(payout_id))
    }

    fn set_hold_state(&mut self, payout_id: Uuid, state: HoldState) {
        if let Some(hold) = self.holds.get_mut(&payout_id) {
            hold.state = state;
        }
    }
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "Wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = WalletError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.client_id = Some(event.client_id());
        self.currency = Some(event.currency());
        match event {
            WalletEvent::FundsDeposited {
                deposit_id,
                amount_minor,
                ..
            } => {
                self.available_minor += amount_minor;
                self.deposits.insert(deposit_id, amount_minor);
            }
            WalletEvent::FundsReserved {
                payout_id,
                amount_minor,
                ..
            } => {
                self.available_minor -= amount_minor;
                self.held_minor += amount_minor;
                self.holds.insert(
                    payout_id,
                    Hold {
                        amount_minor,
                        state: HoldState::Held,
                        provider: None,
                    },
                );
            }
            WalletEvent::FundsSettled {
                payout_id,
                amount_minor,
                provider,
                ..
            } => {
                self.held_minor -= amount_minor;
                self.set_hold_state(payout_id, HoldState::Settled);
                if let Some(hold) = self.holds.get_mut(&payout_id) {
                    hold.provider = Some(provider);
                }
            }
            WalletEvent::FundsReleased {
                payout_id,
                amount_minor,
                ..
            } => {
                self.held_minor -= amount_minor;
                self.available_minor += amount_minor;
                self.set_hold_state(payout_id, HoldState::Released);
            }
            WalletEvent::FundsRefunded {
                payout_id,
                amount_minor,
                ..
            } => {
                self.available_minor += amount_minor;
                self.set_hold_state(payout_id, HoldState::Refunded);
            }
        }
    }
}
